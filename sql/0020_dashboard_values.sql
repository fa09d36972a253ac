-- Dashboard rows with coded values (issue 21, item 4, after sql/0018): the text attributes a
-- dashboard counts by (status, field, channel, handling unit) are stored as integer codes from
-- ioc.dashboard_values, so the copy is about half as wide and the counts hash integers instead
-- of Vietnamese text (whole year: 1.5 s -> 0.96 s for the counts scan, loaded machine). A
-- value's code never changes; new values get theirs in the write that brings them. Rows with
-- more than one unit of a level get a partial index, so counting their other units reads an
-- index of the few, not the table.
CREATE TABLE IF NOT EXISTS ioc.dashboard_values (
    layer_id text NOT NULL REFERENCES ioc.layers (id) ON DELETE CASCADE,
    name     text NOT NULL,
    value    text NOT NULL,
    code     integer GENERATED ALWAYS AS IDENTITY UNIQUE,
    PRIMARY KEY (layer_id, name, value)
);
ALTER TABLE ioc.dashboard_rows ADD COLUMN IF NOT EXISTS coded text[] NOT NULL DEFAULT '{}';

-- Give the values of the coded columns of `source` their codes (those new to the layer).
CREATE OR REPLACE FUNCTION ioc.dashboard_values_sql(l ioc.layers, p_coded text[], source text)
RETURNS text LANGUAGE sql IMMUTABLE AS $$
SELECT format('INSERT INTO ioc.dashboard_values (layer_id, name, value) SELECT DISTINCT %L, x.n,'
    ' x.v FROM %s s CROSS JOIN LATERAL (VALUES %s) x(n, v) WHERE x.v IS NOT NULL'
    ' ON CONFLICT DO NOTHING', l.id, source,
    (SELECT string_agg(format('(%L, s.%I::text)', c, c), ', ') FROM unnest(p_coded) c))
$$;

-- The rows of `source` as dashboard rows (sql/0018), the coded columns as their codes.
CREATE OR REPLACE FUNCTION ioc.dashboard_rows_sql(
    l ioc.layers, p_columns text[], p_units text[], source text, p_coded text[])
RETURNS text LANGUAGE plpgsql STABLE AS $$
DECLARE
    sel text := format('s.%I AS fid', l.id_column);
    joins text := '';
    u ioc.layers;
    g text;
BEGIN
    FOR i IN 1 .. cardinality(p_columns) LOOP
        IF p_columns[i] = ANY(p_coded) THEN
            sel := sel || format(', v%s.code AS %I', i, p_columns[i]);
            joins := joins || format(' LEFT JOIN ioc.dashboard_values v%1$s ON v%1$s.layer_id = %2$L'
                ' AND v%1$s.name = %3$L AND v%1$s.value = s.%3$I::text', i, l.id, p_columns[i]);
        ELSE
            sel := sel || format(', s.%I', p_columns[i]);
        END IF;
    END LOOP;
    FOR i IN 1 .. coalesce(cardinality(p_units), 0) LOOP
        SELECT * INTO u FROM ioc.layers WHERE id = p_units[i];
        g := format('t.%I', l.geometry_column);
        IF l.srid <> u.srid THEN
            g := format('ST_Transform(%s, %s)', g, u.srid);
        END IF;
        sel := sel || format(', a%1$s.ids[1]::integer AS u%1$s,'
            ' CASE WHEN cardinality(a%1$s.ids) > 1 THEN a%1$s.ids[2:] END AS m%1$s', i);
        joins := joins || format(' LEFT JOIN (SELECT t.%1$I AS fid,'
            ' array_agg(u.%2$I::integer ORDER BY u.%2$I) AS ids FROM %3$s t JOIN %4$I.%5$I u'
            ' ON ST_Intersects(u.%6$I, %7$s) GROUP BY 1) a%8$s ON a%8$s.fid = s.%1$I',
            l.id_column, u.id_column, source, u.schema_name, u.table_name, u.geometry_column,
            g, i);
    END LOOP;
    RETURN format('SELECT %s FROM %s s%s', sel, source, joins);
END $$;

CREATE OR REPLACE FUNCTION ioc.dashboard_rows_current(
    p_layer text, p_columns text[], p_units text[], p_coded text[])
RETURNS text LANGUAGE sql STABLE AS $$
SELECT ioc.dashboard_rows_current(p_layer, p_columns, p_units)
WHERE (SELECT coded FROM ioc.dashboard_rows WHERE layer_id = p_layer) = p_coded
$$;

CREATE OR REPLACE FUNCTION ioc.dashboard_rows_sync() RETURNS trigger
LANGUAGE plpgsql AS $$
DECLARE
    r ioc.dashboard_rows;
    l ioc.layers;
BEGIN
    SELECT * INTO r FROM ioc.dashboard_rows WHERE relid = TG_RELID;
    IF NOT FOUND OR to_regclass(format('ioc.%I', r.table_name)) IS NULL THEN
        RETURN NULL;  -- never built (or dropped): the next use builds it
    END IF;
    IF TG_OP = 'TRUNCATE' THEN
        EXECUTE format('TRUNCATE ioc.%I', r.table_name);
        RETURN NULL;
    END IF;
    SELECT * INTO l FROM ioc.layers WHERE id = r.layer_id;
    IF TG_OP <> 'INSERT' THEN
        EXECUTE format('DELETE FROM ioc.%I d USING ioc_old o WHERE d.fid = o.%I',
            r.table_name, l.id_column);
    END IF;
    IF TG_OP <> 'DELETE' THEN
        IF cardinality(r.coded) > 0 THEN
            EXECUTE ioc.dashboard_values_sql(l, r.coded, 'ioc_new');
        END IF;
        EXECUTE format('INSERT INTO ioc.%I %s', r.table_name,
            ioc.dashboard_rows_sql(l, r.columns, r.unit_layers, 'ioc_new', r.coded));
    END IF;
    RETURN NULL;
END $$;

DROP FUNCTION IF EXISTS ioc.dashboard_rows_build(text, text[], text[]);
CREATE OR REPLACE FUNCTION ioc.dashboard_rows_build(
    p_layer text, p_columns text[], p_units text[], p_coded text[])
RETURNS text LANGUAGE plpgsql AS $$
DECLARE
    l ioc.layers;
    rel regclass;
    name text := left('dashboard_rows_' || p_layer, 54) || '_' || left(md5(p_layer), 8);
    done text;
BEGIN
    SELECT * INTO l FROM ioc.layers WHERE id = p_layer;
    IF NOT FOUND THEN
        RETURN NULL;
    END IF;
    SELECT c.oid INTO rel FROM pg_class c
    WHERE c.oid = to_regclass(format('%I.%I', l.schema_name, l.table_name)) AND c.relkind = 'r';
    IF rel IS NULL THEN
        RETURN NULL;
    END IF;
    -- One build at a time per layer; a request that waited for another's build uses it.
    PERFORM pg_advisory_xact_lock(hashtext('ioc.dashboard_rows'), hashtext(p_layer));
    done := ioc.dashboard_rows_current(p_layer, p_columns, p_units, p_coded);
    IF done IS NOT NULL THEN
        RETURN done;
    END IF;
    DELETE FROM ioc.dashboard_rows WHERE layer_id = p_layer;  -- drops the old table (0018)
    EXECUTE format('DROP TABLE IF EXISTS ioc.%I', name);
    IF cardinality(p_coded) > 0 THEN
        EXECUTE ioc.dashboard_values_sql(l, p_coded, rel::text);
    END IF;
    -- In the order of the first column (the report time): a time range reads adjacent pages.
    EXECUTE format('CREATE TABLE ioc.%I AS %s ORDER BY s.%I', name,
        ioc.dashboard_rows_sql(l, p_columns, p_units, rel::text, p_coded), p_columns[1]);
    EXECUTE format('ALTER TABLE ioc.%I ADD PRIMARY KEY (fid)', name);
    EXECUTE format('CREATE INDEX ON ioc.%I (%I)', name, p_columns[1]);
    FOR i IN 1 .. coalesce(cardinality(p_units), 0) LOOP
        EXECUTE format('CREATE INDEX ON ioc.%I (%I) WHERE m%s IS NOT NULL', name, p_columns[1], i);
    END LOOP;
    EXECUTE format('ANALYZE ioc.%I', name);
    INSERT INTO ioc.dashboard_rows
        (layer_id, relid, table_name, columns, unit_layers, unit_versions, coded)
    SELECT p_layer, rel, name, p_columns, p_units, ARRAY(
        SELECT u.version FROM unnest(p_units) WITH ORDINALITY x(id, i)
        JOIN ioc.layers u ON u.id = x.id ORDER BY x.i), p_coded;
    IF (SELECT count(*) FROM pg_trigger WHERE tgrelid = rel AND tgname LIKE 'ioc_dashboard_%') < 4
    THEN
        EXECUTE format('CREATE OR REPLACE TRIGGER ioc_dashboard_insert AFTER INSERT ON %s'
            ' REFERENCING NEW TABLE AS ioc_new FOR EACH STATEMENT'
            ' EXECUTE FUNCTION ioc.dashboard_rows_sync()', rel);
        EXECUTE format('CREATE OR REPLACE TRIGGER ioc_dashboard_update AFTER UPDATE ON %s'
            ' REFERENCING OLD TABLE AS ioc_old NEW TABLE AS ioc_new FOR EACH STATEMENT'
            ' EXECUTE FUNCTION ioc.dashboard_rows_sync()', rel);
        EXECUTE format('CREATE OR REPLACE TRIGGER ioc_dashboard_delete AFTER DELETE ON %s'
            ' REFERENCING OLD TABLE AS ioc_old FOR EACH STATEMENT'
            ' EXECUTE FUNCTION ioc.dashboard_rows_sync()', rel);
        EXECUTE format('CREATE OR REPLACE TRIGGER ioc_dashboard_truncate AFTER TRUNCATE ON %s'
            ' FOR EACH STATEMENT EXECUTE FUNCTION ioc.dashboard_rows_sync()', rel);
    END IF;
    RETURN name;
END $$;

-- Copies built by 0018 (text values, no partial indexes) are rebuilt on their next use.
DELETE FROM ioc.dashboard_rows;
