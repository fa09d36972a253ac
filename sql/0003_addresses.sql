-- Digital addresses: the address registry, its search vocabulary and the links from features of
-- point layers to the address they belong to. See docs/addresses.md for the design.

-- unaccent() is STABLE (it reads a dictionary chosen by search_path), so it cannot be used in an
-- index or a generated column. This wrapper names the dictionary with its schema and is declared
-- IMMUTABLE, which is true as long as nobody edits the unaccent rules file.
DO $$
DECLARE
    ext_schema text := (SELECT n.nspname FROM pg_extension e
                        JOIN pg_namespace n ON n.oid = e.extnamespace WHERE e.extname = 'unaccent');
BEGIN
    EXECUTE format(
        'CREATE OR REPLACE FUNCTION ioc.immutable_unaccent(text) RETURNS text'
        ' LANGUAGE sql IMMUTABLE PARALLEL SAFE STRICT'
        ' RETURN %1$I.unaccent(%2$L::regdictionary, $1)',
        ext_schema, ext_schema || '.unaccent');
END
$$;

-- The one normalisation of searchable text: no diacritics (đ → d included), lower case, every run
-- of characters other than letters, digits and '/' turned into one space.
CREATE FUNCTION ioc.search_key(text) RETURNS text
    LANGUAGE sql IMMUTABLE PARALLEL SAFE STRICT
    RETURN btrim(regexp_replace(lower(ioc.immutable_unaccent($1)), '[^a-z0-9/]+', ' ', 'g'));

-- A street's key drops the word "đường" in front ("Đường Lê Lợi" = "Lê Lợi") but keeps it in
-- numbered streets ("Đường số 20").
CREATE FUNCTION ioc.street_key(text) RETURNS text
    LANGUAGE sql IMMUTABLE PARALLEL SAFE STRICT
    RETURN nullif(regexp_replace(ioc.search_key($1), '^duong (?!so )', ''), '');

-- The registry. One row per digital address code; the national platform is the authority, the
-- demo city or an export file the way rows get here.
CREATE TABLE ioc.addresses (
    code            text PRIMARY KEY,
    house_number    text,
    street          text,
    ward_code       text NOT NULL,            -- ward since 1 July 2025
    ward_code_2019  text,                     -- ward before the 2025 reorganisation (2019 codes)
    building_id     text,
    parcel_id       text,
    source          text NOT NULL,
    valid_from      date,
    valid_to        date,
    geom            geometry(Point, 4326) NOT NULL,
    updated_at      timestamptz NOT NULL DEFAULT now(),
    street_key      text GENERATED ALWAYS AS (ioc.street_key(street)) STORED,
    house_key       text GENERATED ALWAYS AS
                        (nullif(lower(regexp_replace(house_number, '\s+', '', 'g')), '')) STORED,
    house_sort      integer GENERATED ALWAYS AS
                        (CAST(substring(house_number FROM '^\s*(\d{1,9})') AS integer)) STORED,
    CHECK (valid_to IS NULL OR valid_from IS NULL OR valid_to >= valid_from)
);
CREATE INDEX addresses_geom_gist ON ioc.addresses USING gist (geom);
CREATE INDEX addresses_ward_idx ON ioc.addresses (ward_code, street_key, house_key);
CREATE INDEX addresses_ward_2019_idx ON ioc.addresses (ward_code_2019, street_key, house_key);
CREATE INDEX addresses_street_idx ON ioc.addresses (street_key, house_key);

-- The search vocabulary: every street, 2025 ward and 2019 ward that occurs in the registry.
-- Small (thousands of rows), rebuilt after each load; servers keep it in memory.
CREATE TABLE ioc.address_names (
    kind         text NOT NULL CHECK (kind IN ('street', 'ward', 'ward_2019')),
    key          text NOT NULL,               -- street_key or ward code
    name         text NOT NULL,               -- matched text: 'Bến Thành', 'Lê Lợi'
    label        text NOT NULL,               -- shown text: 'Phường Bến Thành'
    district     text,                        -- 2019 district of a 2019 ward
    n            integer NOT NULL DEFAULT 0,  -- addresses using it
    search_text  text GENERATED ALWAYS AS (ioc.search_key(name)) STORED,
    PRIMARY KEY (kind, key)
);
-- Typo fallback: names that the in-process matcher did not find are looked up by trigram.
CREATE INDEX address_names_trgm ON ioc.address_names USING gin (search_text gin_trgm_ops);

-- Features of point layers and the address they belong to (nearest valid address within a
-- distance). Layer tables stay untouched; rows go when a layer is relinked.
CREATE TABLE ioc.address_links (
    layer_id    text NOT NULL,
    fid         bigint NOT NULL,
    code        text NOT NULL,
    distance_m  real NOT NULL,
    linked_at   timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (layer_id, fid)
);
CREATE INDEX address_links_code_idx ON ioc.address_links (code, layer_id);
