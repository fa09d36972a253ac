-- Which database this is, for the tile disk cache (tiles/cache.py): its keys hold layer ids and
-- versions, which repeat from one database to another (test runs, a re-created database, a
-- restored dump), so every process of a database keeps its tiles under this database's name.
-- The id is made once, at migrate time; a copy of the database (CREATE DATABASE ... TEMPLATE,
-- a dump restored elsewhere) carries it along, hence the database's OID and the cluster's
-- system identifier are part of the name too. A streaming replica has all three of its primary.
CREATE TABLE IF NOT EXISTS ioc.database_identity (
    only_row   boolean PRIMARY KEY DEFAULT true CHECK (only_row),
    id         uuid NOT NULL DEFAULT gen_random_uuid(),
    created_at timestamptz NOT NULL DEFAULT now()
);
INSERT INTO ioc.database_identity DEFAULT VALUES ON CONFLICT DO NOTHING;

CREATE OR REPLACE FUNCTION ioc.database_identity() RETURNS text
LANGUAGE plpgsql STABLE AS $$
DECLARE
    cluster text := '';
BEGIN
    BEGIN
        SELECT system_identifier::text INTO cluster FROM pg_control_system();
    EXCEPTION WHEN insufficient_privilege THEN
        cluster := '';  -- a role without it: the id and the OID still tell databases apart
    END;
    RETURN concat_ws(':', (SELECT id::text FROM ioc.database_identity),
        (SELECT oid::text FROM pg_database WHERE datname = current_database()), cluster);
END $$;
