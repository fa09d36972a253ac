-- Dashboard rows that cost nothing on the write path (issues 19 and 21, after sql/0020).
--
-- sql/0020's trigger deleted and re-inserted every row an UPDATE touched, running the unit
-- lookups (point-in-polygon against three unit layers) again for rows that did not move. Now an
-- UPDATE joins its old and new transition rows by the layer's id, as the tile triggers of
-- sql/0014 skip unchanged rows:
--   * rows whose geometry changed (or whose id is new or gone) are deleted and inserted again,
--     their units looked up; when none did, the lookup statement is not even planned;
--   * rows in the same place keep their unit ids; only their copied columns are set, and only
--     when one of them changed: an update of other attributes writes nothing to the copy.
-- A 500-report status batch of the 20,000-report test layer: the trigger ~5 ms (was ~55 ms).
CREATE OR REPLACE FUNCTION ioc.dashboard_rows_sync() RETURNS trigger
LANGUAGE plpgsql AS $$
DECLARE
    r ioc.dashboard_rows;
    l ioc.layers;
    sets text;
    olds text;
    news text;
    codes text;
    any_moved boolean;
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
    IF TG_OP = 'DELETE' THEN
        EXECUTE format('DELETE FROM ioc.%I d USING ioc_old o WHERE d.fid = o.%I',
            r.table_name, l.id_column);
        RETURN NULL;
    END IF;
    IF cardinality(r.coded) > 0 THEN
        EXECUTE ioc.dashboard_values_sql(l, r.coded, 'ioc_new');
    END IF;
    IF TG_OP = 'INSERT' THEN
        EXECUTE format('INSERT INTO ioc.%I %s', r.table_name,
            ioc.dashboard_rows_sql(l, r.columns, r.unit_layers, 'ioc_new', r.coded));
        RETURN NULL;
    END IF;
    -- UPDATE. Moved, new or gone ids: out of the copy, the new ones back with their units —
    -- the lookup statement not even planned when nothing moved (the usual feed batch).
    -- (a count over a hash full join on the id: EXISTS would get a first-row plan, a nested
    -- loop of 500 x 500 geometry comparisons)
    EXECUTE format('SELECT count(*) > 0 FROM ioc_old o FULL JOIN ioc_new n ON n.%1$I = o.%1$I'
        ' WHERE o.%1$I IS NULL OR n.%1$I IS NULL OR o.%2$I IS DISTINCT FROM n.%2$I',
        l.id_column, l.geometry_column) INTO any_moved;
    IF any_moved THEN
        -- By the old rows (an id only new is not in the copy): the copy's key, not a scan.
        EXECUTE format('DELETE FROM ioc.%1$I d USING ioc_old o LEFT JOIN ioc_new n'
            ' ON n.%2$I = o.%2$I WHERE d.fid = o.%2$I AND (n.%2$I IS NULL'
            ' OR o.%3$I IS DISTINCT FROM n.%3$I)', r.table_name, l.id_column, l.geometry_column);
        -- The new rows that moved (inlined: materialised, the lookups' plans were slower).
        EXECUTE format('INSERT INTO ioc.%1$I WITH came AS (SELECT n.* FROM ioc_new n'
            ' LEFT JOIN ioc_old o ON o.%2$I = n.%2$I WHERE o.%2$I IS NULL'
            ' OR o.%3$I IS DISTINCT FROM n.%3$I) %4$s', r.table_name, l.id_column,
            l.geometry_column, ioc.dashboard_rows_sql(l, r.columns, r.unit_layers, 'came', r.coded));
    END IF;
    -- The codes by a join (hashed), not a subquery a row and column: 2,000 lookups a batch.
    SELECT string_agg(CASE WHEN c = ANY(r.coded) THEN format('%I = v%s.code', c, i)
            ELSE format('%1$I = n.%1$I', c) END, ', '),
        string_agg(format('o.%I', c), ', '), string_agg(format('n.%I', c), ', '),
        coalesce(string_agg(format(' LEFT JOIN ioc.dashboard_values v%1$s ON v%1$s.layer_id = %2$L'
            ' AND v%1$s.name = %3$L AND v%1$s.value = n.%3$I::text', i, l.id, c), '')
            FILTER (WHERE c = ANY(r.coded)), '')
    INTO sets, olds, news, codes FROM unnest(r.columns) WITH ORDINALITY x(c, i);
    EXECUTE format('UPDATE ioc.%1$I d SET %2$s FROM ioc_new n JOIN ioc_old o ON o.%3$I = n.%3$I'
        ' AND o.%4$I IS NOT DISTINCT FROM n.%4$I%7$s WHERE d.fid = n.%3$I'
        ' AND ROW(%5$s) IS DISTINCT FROM ROW(%6$s)',
        r.table_name, sets, l.id_column, l.geometry_column, olds, news, codes);
    RETURN NULL;
END $$;
