-- Core of ioc: extensions, schemas, the layer registry, API keys and metadata.
-- The runner (ioc/migrations.py) has already created schema ioc and ioc.schema_migrations.

CREATE EXTENSION IF NOT EXISTS postgis;
CREATE EXTENSION IF NOT EXISTS pg_trgm;
CREATE EXTENSION IF NOT EXISTS unaccent;

-- Layer tables live in their own schema so that the registry, not a scan, says what is served.
CREATE SCHEMA IF NOT EXISTS data;

CREATE TABLE ioc.layers (
    id              text PRIMARY KEY CHECK (id ~ '^[a-z][a-z0-9_]{1,62}$'),
    schema_name     text NOT NULL,
    table_name      text NOT NULL,
    geometry_column text NOT NULL DEFAULT 'geom',
    id_column       text NOT NULL DEFAULT 'fid',
    geometry_type   text NOT NULL,
    srid            integer NOT NULL,
    title_vi        text NOT NULL,
    title_en        text NOT NULL,
    description_vi  text NOT NULL DEFAULT '',
    description_en  text NOT NULL DEFAULT '',
    domain          text NOT NULL,
    department      text NOT NULL,
    access          text NOT NULL CHECK (access IN ('public', 'internal', 'restricted')),
    cadence         text NOT NULL DEFAULT 'static',
    origin          text NOT NULL DEFAULT 'manifest'
                    CHECK (origin IN ('manifest', 'registered', 'published', 'derived')),
    manifest        jsonb NOT NULL,          -- the whole manifest: attributes, style, source, zoom
    metadata        jsonb NOT NULL DEFAULT '{}'::jsonb,   -- e.g. synthetic geometry notes
    feature_count   bigint NOT NULL DEFAULT 0,
    extent          double precision[] CHECK (extent IS NULL OR cardinality(extent) = 4),
    version         integer NOT NULL DEFAULT 1,
    last_update     timestamptz,
    created_at      timestamptz NOT NULL DEFAULT now(),
    updated_at      timestamptz NOT NULL DEFAULT now(),
    deleted_at      timestamptz,
    UNIQUE (schema_name, table_name)
);
CREATE INDEX layers_domain_idx ON ioc.layers (domain);

CREATE TABLE ioc.api_keys (
    id          bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    key_hash    text NOT NULL UNIQUE,      -- sha256 of the whole key; the key itself is never stored
    prefix      text NOT NULL,             -- first characters, to recognise a key in lists
    role        text NOT NULL CHECK (role IN ('operator', 'analyst', 'publisher', 'admin')),
    department  text,
    label       text NOT NULL DEFAULT '',
    created_at  timestamptz NOT NULL DEFAULT now(),
    revoked_at  timestamptz,
    CHECK (role <> 'publisher' OR department IS NOT NULL)
);

CREATE TABLE ioc.meta (
    key        text PRIMARY KEY,
    value      jsonb NOT NULL,
    updated_at timestamptz NOT NULL DEFAULT now()
);
