-- Dashboard rows that cost nothing on the write path (issues 19 and 21, after sql/0020).
--
-- sql/0020's trigger deleted and re-inserted every row an UPDATE touched, running the unit
-- lookups (point-in-polygon against three unit layers) again for rows that did not move:
-- ~3 ms for a one-report PATCH, ~0.3 s for a 500-report feed batch of status changes. Now an
-- UPDATE joins its old and new transition rows by the layer's id, as the tile triggers of
-- sql/0014 do (ioc.tile_changed_sql):
--   * rows whose geometry changed (or whose id is new or gone) are deleted and inserted again,
--     their units looked up;
--   * rows in the same place keep their unit ids; only their copied columns are set, and only
--     when one of them changed: an update of other attributes writes nothing to the copy.
CREATE OR REPLACE FUNCTION ioc.dashboard_rows_sync() RETURNS trigger
LANGUAGE plpgsql AS $$
DECLARE
    r ioc.dashboard_rows;
    l ioc.layers;
    sets text;
    olds text;
    news text;
    gone text;  -- old rows no new row has in the same place (moved, or their id gone)
    came text;  -- new rows no old row had in the same place (moved, or their id new)
    moved boolean;
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
    gone := ioc.tile_changed_sql(l, NULL, 'ioc_old', 'ioc_new');
    came := ioc.tile_changed_sql(l, NULL, 'ioc_new', 'ioc_old');
    EXECUTE format('SELECT EXISTS %s OR EXISTS %s', gone, came) INTO moved;
    IF moved THEN
        EXECUTE format('DELETE FROM ioc.%1$I d WHERE d.fid IN (SELECT a.%2$I FROM %3$s a)'
            ' OR d.fid IN (SELECT b.%2$I FROM %4$s b)', r.table_name, l.id_column, gone, came);
        EXECUTE format('INSERT INTO ioc.%I %s', r.table_name,
            ioc.dashboard_rows_sql(l, r.columns, r.unit_layers, came, r.coded));
    END IF;
    -- In the same place: the copied columns, where one of them changed.
    SELECT string_agg(CASE WHEN c = ANY(r.coded) THEN format('%1$I = (SELECT v.code FROM'
            ' ioc.dashboard_values v WHERE v.layer_id = %2$L AND v.name = %1$L'
            ' AND v.value = n.%1$I::text)', c, l.id) ELSE format('%1$I = n.%1$I', c) END, ', '),
        string_agg(format('o.%I', c), ', '), string_agg(format('n.%I', c), ', ')
    INTO sets, olds, news FROM unnest(r.columns) c;
    EXECUTE format('UPDATE ioc.%1$I d SET %2$s FROM ioc_new n JOIN ioc_old o ON o.%3$I = n.%3$I'
        ' AND o.%4$I IS NOT DISTINCT FROM n.%4$I WHERE d.fid = n.%3$I'
        ' AND ROW(%5$s) IS DISTINCT FROM ROW(%6$s)',
        r.table_name, sets, l.id_column, l.geometry_column, olds, news);
    RETURN NULL;
END $$;
