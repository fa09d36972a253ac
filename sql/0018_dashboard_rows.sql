-- Dashboard rows (issue 21, item 4): a narrow copy of a dashboard's source layer — its id, the
-- attributes the panels read, and the administrative units each row is in — so that a cold
-- dashboard load scans a table a fraction of the layer's width and groups by unit without
-- joining a million reports to their unit memberships.
--
-- Units: for each unit layer i, u<i> is the smallest unit id the row's geometry intersects and
-- m<i> the others (NULL for nearly every row: only a point on a shared boundary, or a line or
-- polygon across units, is in more than one). Counting u<i> plus unnest(m<i>) is exactly the
-- ST_Intersects join of ioc.query.units.
--
-- Built on first use (ioc.dashboard_rows_build, from ioc.dashboards.rows), then kept current by
-- statement triggers with transition tables on the layer's table (publishing deletes and inserts
-- in that table, so a publish is two statements). A build is used while the layer's table is the
-- one it was built from (relid), the columns and unit layers are those asked for, and the unit
-- layers are at the versions it was built at; otherwise the next use rebuilds it.
CREATE TABLE IF NOT EXISTS ioc.dashboard_rows (
    layer_id      text PRIMARY KEY REFERENCES ioc.layers (id) ON DELETE CASCADE,
    relid         oid NOT NULL,
    table_name    text NOT NULL,        -- in schema ioc
    columns       text[] NOT NULL,      -- copied attributes, the first one the physical order
    unit_layers   text[] NOT NULL,      -- the layers of u1, u2, …
    unit_versions integer[] NOT NULL,
    built_at      timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX IF NOT EXISTS dashboard_rows_relid ON ioc.dashboard_rows (relid);

-- The rows of `source` (the layer's table, or a trigger's transition table) as dashboard rows.
-- Each unit level is a join from the units' side (their GiST index, PostGIS's cached prepared
-- polygons), tested in the units' SRID as ioc.query.units.join_condition does.
CREATE OR REPLACE FUNCTION ioc.dashboard_rows_sql(
    l ioc.layers, p_columns text[], p_units text[], source text)
RETURNS text LANGUAGE plpgsql STABLE AS $$
DECLARE
    sel text := format('s.%I AS fid', l.id_column);
    joins text := '';
    u ioc.layers;
    g text;
BEGIN
    FOR i IN 1 .. cardinality(p_columns) LOOP
        sel := sel || format(', s.%I', p_columns[i]);
    END LOOP;
    FOR i IN 1 .. coalesce(cardinality(p_units), 0) LOOP
        SELECT * INTO u FROM ioc.layers WHERE id = p_units[i];
        g := format('t.%I', l.geometry_column);
        IF l.srid <> u.srid THEN
            g := format('ST_Transform(%s, %s)', g, u.srid);
        END IF;
        sel := sel || format(', a%1$s.ids[1] AS u%1$s,'
            ' CASE WHEN cardinality(a%1$s.ids) > 1 THEN a%1$s.ids[2:] END AS m%1$s', i);
        joins := joins || format(' LEFT JOIN (SELECT t.%1$I AS fid,'
            ' array_agg(u.%2$I::bigint ORDER BY u.%2$I) AS ids FROM %3$s t JOIN %4$I.%5$I u'
            ' ON ST_Intersects(u.%6$I, %7$s) GROUP BY 1) a%8$s ON a%8$s.fid = s.%1$I',
            l.id_column, u.id_column, source, u.schema_name, u.table_name, u.geometry_column,
            g, i);
    END LOOP;
    RETURN format('SELECT %s FROM %s s%s', sel, source, joins);
END $$;

-- The side table's name when it is current for these columns and unit layers, else NULL.
CREATE OR REPLACE FUNCTION ioc.dashboard_rows_current(
    p_layer text, p_columns text[], p_units text[])
RETURNS text LANGUAGE sql STABLE AS $$
SELECT r.table_name FROM ioc.dashboard_rows r JOIN ioc.layers l ON l.id = r.layer_id
WHERE r.layer_id = p_layer AND r.columns = p_columns AND r.unit_layers = p_units
  AND r.relid = to_regclass(format('%I.%I', l.schema_name, l.table_name))::oid
  AND to_regclass(format('ioc.%I', r.table_name)) IS NOT NULL
  AND r.unit_versions = ARRAY(
      SELECT u.version FROM unnest(p_units) WITH ORDINALITY x(id, i)
      JOIN ioc.layers u ON u.id = x.id ORDER BY x.i)
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
        EXECUTE format('INSERT INTO ioc.%I %s', r.table_name,
            ioc.dashboard_rows_sql(l, r.columns, r.unit_layers, 'ioc_new'));
    END IF;
    RETURN NULL;
END $$;

-- (Re)build a layer's dashboard rows unless another transaction just did; returns the side
-- table's name, NULL when the layer has no plain table.
CREATE OR REPLACE FUNCTION ioc.dashboard_rows_build(
    p_layer text, p_columns text[], p_units text[])
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
    done := ioc.dashboard_rows_current(p_layer, p_columns, p_units);
    IF done IS NOT NULL THEN
        RETURN done;
    END IF;
    DELETE FROM ioc.dashboard_rows WHERE layer_id = p_layer;  -- drops the old table (below)
    EXECUTE format('DROP TABLE IF EXISTS ioc.%I', name);
    -- In the order of the first column (the report time): a time range reads adjacent pages.
    EXECUTE format('CREATE TABLE ioc.%I AS %s ORDER BY s.%I', name,
        ioc.dashboard_rows_sql(l, p_columns, p_units, rel::text), p_columns[1]);
    EXECUTE format('ALTER TABLE ioc.%I ADD PRIMARY KEY (fid)', name);
    EXECUTE format('CREATE INDEX ON ioc.%I (%I)', name, p_columns[1]);
    EXECUTE format('ANALYZE ioc.%I', name);
    INSERT INTO ioc.dashboard_rows (layer_id, relid, table_name, columns, unit_layers, unit_versions)
    SELECT p_layer, rel, name, p_columns, p_units, ARRAY(
        SELECT u.version FROM unnest(p_units) WITH ORDINALITY x(id, i)
        JOIN ioc.layers u ON u.id = x.id ORDER BY x.i);
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

-- A layer's side table goes with its record (a rebuild, or the layer deleted: ON DELETE CASCADE).
CREATE OR REPLACE FUNCTION ioc.dashboard_rows_forget() RETURNS trigger
LANGUAGE plpgsql AS $$
DECLARE
    t text;
BEGIN
    FOR t IN SELECT table_name FROM gone LOOP
        EXECUTE format('DROP TABLE IF EXISTS ioc.%I', t);
    END LOOP;
    RETURN NULL;
END $$;
CREATE OR REPLACE TRIGGER dashboard_rows_forget AFTER DELETE ON ioc.dashboard_rows
    REFERENCING OLD TABLE AS gone FOR EACH STATEMENT EXECUTE FUNCTION ioc.dashboard_rows_forget();
