-- Publishing: staging tables for uploads, kept versions for rollback, and the audit trail.

-- Uploads are loaded here first; the live table is only touched by the swap transaction.
CREATE SCHEMA IF NOT EXISTS staging;
-- One table per kept version of a layer's data ("<layer>__v<N>").
CREATE SCHEMA IF NOT EXISTS versions;

CREATE TABLE ioc.layer_versions (
    layer_id      text NOT NULL REFERENCES ioc.layers (id) ON DELETE CASCADE,
    version       integer NOT NULL,
    snapshot      text,                 -- table in schema versions holding this version's rows
    operation     text NOT NULL CHECK (operation IN ('seed', 'replace', 'append', 'restore')),
    restored_from integer,
    feature_count bigint NOT NULL,
    checksum      text,                 -- sha256 of the uploaded file
    principal     text NOT NULL,
    created_at    timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (layer_id, version)
);

CREATE TABLE ioc.audit (
    id          bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    at          timestamptz NOT NULL DEFAULT now(),
    principal   text NOT NULL,          -- role[:department]
    key_id      bigint,
    action      text NOT NULL,          -- layer.create, layer.replace, layer.append, layer.restore, layer.delete
    layer_id    text NOT NULL,
    version     integer,
    counts      jsonb NOT NULL DEFAULT '{}'::jsonb,
    checksum    text,
    detail      jsonb NOT NULL DEFAULT '{}'::jsonb
);
CREATE INDEX audit_layer_idx ON ioc.audit (layer_id, at DESC);
