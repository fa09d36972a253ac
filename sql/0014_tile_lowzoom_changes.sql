-- Low-zoom triggers that pay only for what moved (issue 19, write performance).
--
-- The statement triggers of sql/0012 applied every row of an UPDATE to the cells (minus the
-- old row, plus the new one at every zoom): a 500-row feed batch of readings went from 17 ms
-- to 135-326 ms although no point moved. Now:
--   * an UPDATE's rows whose geometry (and, for points, style category) is what it was are
--     left out, by an anti-join of the old and new transition tables on the layer's id;
--   * the points are summed once per cell at the finest zoom, and the coarser zooms are
--     summed from those cells (a cell is exactly 2^k cells of a zoom k finer), so a batch
--     costs one pass over its points, not one per zoom; cells whose sums did not change
--     (a point moved and came back inside the cell) are not written;
--   * emptied cells are deleted by their row address, so the partial index on n (which made
--     every cell update a non-HOT update, n being in its predicate) goes.
-- The low-zoom rows of a layer go with its ioc.tile_lowzoom row (a layer deleted from the
-- registry): tile_cells and tile_shapes no longer keep the cells of dropped layers.

-- The rows of transition table `source` that no row of `other` matches with the same id,
-- geometry (PostGIS 3's = : same coordinates in the same order) and category: on UPDATE, the
-- old rows to subtract and the new rows to add. A FROM item aliased like a table.
CREATE OR REPLACE FUNCTION ioc.tile_changed_sql(
    l ioc.layers, category text, source text, other text)
RETURNS text LANGUAGE sql IMMUTABLE AS $$
SELECT format('(SELECT r.* FROM %1$s r WHERE NOT EXISTS (SELECT 1 FROM %2$s u'
    ' WHERE u.%3$I = r.%3$I AND u.%4$I IS NOT DISTINCT FROM r.%4$I%5$s))',
    source, other, l.id_column, l.geometry_column,
    CASE WHEN category IS NULL THEN ''
    ELSE format(' AND u.%1$I IS NOT DISTINCT FROM r.%1$I', category) END)
$$;

-- Add the points of `points` (signed) to the cells of zooms zmin..zmax. The finest zoom's
-- cells from the points, the coarser ones from those (integer division of the cell index:
-- exact, the build's own arithmetic). Returns the addresses of the cells it emptied.
CREATE OR REPLACE FUNCTION ioc.tile_cells_sql(layer text, points text, zmin int, zmax int, grid int)
RETURNS text LANGUAGE sql IMMUTABLE AS $$
SELECT format($f$
WITH f AS (SELECT
        floor((p.px + pi() * 6378137.0) / (2 * pi() * 6378137.0 / (%2$s * 2 ^ %5$s)))::bigint AS gi,
        floor((pi() * 6378137.0 - p.py) / (2 * pi() * 6378137.0 / (%2$s * 2 ^ %5$s)))::bigint AS gj,
        p.c, sum(p.s) AS n, sum(p.s * p.px) AS sx, sum(p.s * p.py) AS sy
    FROM (%3$s) p GROUP BY 1, 2, 3),
q AS (SELECT zz.z, f.gi / (1::bigint << (%5$s - zz.z)) AS gi,
        f.gj / (1::bigint << (%5$s - zz.z)) AS gj, f.c,
        sum(f.n) AS n, sum(f.sx) AS sx, sum(f.sy) AS sy
    FROM f, generate_series(%4$s, %5$s) AS zz(z)
    GROUP BY 1, 2, 3, 4
    HAVING sum(f.n) <> 0 OR sum(f.sx) <> 0 OR sum(f.sy) <> 0),
up AS (INSERT INTO ioc.tile_cells AS t (layer_id, z, x, y, i, j, c, n, sx, sy)
    SELECT %1$L, q.z, q.gi / %2$s, q.gj / %2$s, q.gi %% %2$s, q.gj %% %2$s, q.c, q.n, q.sx, q.sy
    FROM q ORDER BY q.z, q.gi / %2$s, q.gj / %2$s
    ON CONFLICT ON CONSTRAINT tile_cells_key DO UPDATE
    SET n = t.n + EXCLUDED.n, sx = t.sx + EXCLUDED.sx, sy = t.sy + EXCLUDED.sy
    RETURNING t.ctid, t.n)
SELECT coalesce(array_agg(ctid) FILTER (WHERE n <= 0), '{}') FROM up$f$,
    layer, grid, points, zmin, zmax)
$$;

CREATE OR REPLACE FUNCTION ioc.tile_lowzoom_sync() RETURNS trigger
LANGUAGE plpgsql AS $$
DECLARE
    m ioc.tile_lowzoom;
    l ioc.layers;
    src_new text := 'ioc_new';
    src_old text := 'ioc_old';
    points text;
    emptied tid[];
BEGIN
    SELECT * INTO m FROM ioc.tile_lowzoom WHERE relid = TG_RELID;
    IF NOT FOUND THEN
        -- First write to a table nobody built yet (a new layer): build from what is there now,
        -- this statement included.
        SELECT * INTO l FROM ioc.layers
        WHERE schema_name = TG_TABLE_SCHEMA AND table_name = TG_TABLE_NAME;
        IF FOUND THEN
            PERFORM ioc.tile_lowzoom_build(l.id);
        END IF;
        RETURN NULL;
    END IF;
    IF m.kind = 'none' THEN
        RETURN NULL;
    END IF;
    IF TG_OP = 'TRUNCATE' THEN
        DELETE FROM ioc.tile_cells WHERE layer_id = m.layer_id;
        DELETE FROM ioc.tile_shapes WHERE layer_id = m.layer_id;
        RETURN NULL;
    END IF;
    SELECT * INTO l FROM ioc.layers WHERE id = m.layer_id;
    IF TG_OP = 'UPDATE' THEN  -- only the rows that moved (or changed category) count
        src_new := ioc.tile_changed_sql(l, CASE WHEN m.kind = 'points' THEN m.category END,
            'ioc_new', 'ioc_old');
        src_old := ioc.tile_changed_sql(l, CASE WHEN m.kind = 'points' THEN m.category END,
            'ioc_old', 'ioc_new');
    END IF;
    IF m.kind = 'points' THEN
        points := concat_ws(' UNION ALL ',
            CASE WHEN TG_OP <> 'DELETE' THEN ioc.tile_points_sql(l, m.category, src_new, 1) END,
            CASE WHEN TG_OP <> 'INSERT' THEN ioc.tile_points_sql(l, m.category, src_old, -1) END);
        EXECUTE ioc.tile_cells_sql(m.layer_id, points, m.min_zoom, m.max_zoom, m.grid)
            INTO emptied;
        IF cardinality(emptied) > 0 THEN
            DELETE FROM ioc.tile_cells WHERE ctid = ANY(emptied);
        END IF;
    ELSE
        IF TG_OP <> 'INSERT' THEN
            EXECUTE format('DELETE FROM ioc.tile_shapes s USING %s o'
                ' WHERE s.layer_id = $1 AND s.fid = o.%I', src_old, l.id_column) USING m.layer_id;
        END IF;
        IF TG_OP <> 'DELETE' THEN
            EXECUTE ioc.tile_shapes_sql(m.layer_id, l, src_new, m.min_zoom, m.max_zoom,
                m.visible_px, m.simplify_px);
        END IF;
    END IF;
    RETURN NULL;
END $$;

-- Emptied cells are found by address now (above): the partial index only cost HOT updates.
DROP INDEX IF EXISTS ioc.tile_cells_empty;

-- A layer's low-zoom rows go with its build record (deleted with the layer, ON DELETE CASCADE).
CREATE OR REPLACE FUNCTION ioc.tile_lowzoom_forget() RETURNS trigger
LANGUAGE plpgsql AS $$
BEGIN
    DELETE FROM ioc.tile_cells c USING gone g WHERE c.layer_id = g.layer_id;
    DELETE FROM ioc.tile_shapes s USING gone g WHERE s.layer_id = g.layer_id;
    RETURN NULL;
END $$;
CREATE OR REPLACE TRIGGER tile_lowzoom_forget AFTER DELETE ON ioc.tile_lowzoom
    REFERENCING OLD TABLE AS gone FOR EACH STATEMENT EXECUTE FUNCTION ioc.tile_lowzoom_forget();
-- What layers dropped before this migration left behind.
DELETE FROM ioc.tile_cells c
WHERE NOT EXISTS (SELECT 1 FROM ioc.tile_lowzoom m WHERE m.layer_id = c.layer_id);
DELETE FROM ioc.tile_shapes s
WHERE NOT EXISTS (SELECT 1 FROM ioc.tile_lowzoom m WHERE m.layer_id = s.layer_id);
