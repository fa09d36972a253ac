-- Small polygons merged into blocks at generalised zooms (issue 20, dense z12 tiles). A dense
-- z12 buildings tile drew ~6,900 buildings one by one, nearly all of them one or two pixels
-- wide: most of its cost, for specks. A polygon whose bounding box is visible (visible_px) but
-- under merge_px pixels both ways at a zoom is no longer a shape of its own there: it is
-- counted in the block of its cell (16 × 16 pixels of a 256-pixel tile, aligned with the tiles),
-- whose geometry covers the pixels of its members (each member's box rounded to whole pixels,
-- at least one), with the number of members and their dominant style.by value. So a dense z12
-- tile is a few hundred blocks and the large shapes; every feature is still drawn or counted.
--
-- ioc.tile_merged holds, per merged feature and zoom, its pixel box, cell and category;
-- ioc.tile_blocks, per cell, the union, count and dominant category, recomputed for the cells
-- a statement touches (by the same statement triggers as the shapes).
ALTER TABLE ioc.tile_lowzoom ADD COLUMN IF NOT EXISTS merge_px double precision NOT NULL DEFAULT 0;

CREATE TABLE IF NOT EXISTS ioc.tile_merged (
    layer_id text NOT NULL,
    z        smallint NOT NULL,
    fid      bigint NOT NULL,
    cx       integer NOT NULL,   -- the cell: 16-pixel columns from the west, rows from the north
    cy       integer NOT NULL,
    x0       bigint NOT NULL,    -- the box in whole pixels of zoom z (256-pixel tiles), from
    y0       bigint NOT NULL,    -- the north-west corner of the world; x1 > x0, y1 > y0
    x1       bigint NOT NULL,
    y1       bigint NOT NULL,
    c        text,               -- the style.by value as text (NULL without one)
    PRIMARY KEY (layer_id, fid, z)
);
CREATE INDEX IF NOT EXISTS tile_merged_cell ON ioc.tile_merged (layer_id, z, cx, cy);

CREATE TABLE IF NOT EXISTS ioc.tile_blocks (
    layer_id text NOT NULL,
    z        smallint NOT NULL,
    cx       integer NOT NULL,
    cy       integer NOT NULL,
    n        integer NOT NULL,   -- members
    c        text,               -- the members' most frequent category (ties: the least value;
                                 -- members without one are not counted for it)
    geom     geometry NOT NULL,  -- EPSG:3857
    PRIMARY KEY (layer_id, z, cx, cy)
);
CREATE INDEX IF NOT EXISTS tile_blocks_gist ON ioc.tile_blocks USING gist (layer_id, z, geom);

-- INSERT the merged features of `source` (zooms zmin..zmax) into ioc.tile_merged, returning
-- the cells it touched as three arrays (z, cx, cy). `category` is the style.by column or NULL.
CREATE OR REPLACE FUNCTION ioc.tile_merged_sql(
    layer text, l ioc.layers, source text, zmin int, zmax int, visible_px float8,
    merge_px float8, category text)
RETURNS text LANGUAGE sql IMMUTABLE AS $$
SELECT format($f$
WITH f AS (SELECT t.%2$I AS id, %3$s AS g, %9$s AS c FROM %4$s t),
p AS (SELECT f.id, f.c, zz.z,
        round((ST_XMin(f.g) + pi() * 6378137.0) / (2 * pi() * 6378137.0 / (256 * 2 ^ zz.z)))::bigint AS x0,
        round((ST_XMax(f.g) + pi() * 6378137.0) / (2 * pi() * 6378137.0 / (256 * 2 ^ zz.z)))::bigint AS x1,
        round((pi() * 6378137.0 - ST_YMax(f.g)) / (2 * pi() * 6378137.0 / (256 * 2 ^ zz.z)))::bigint AS y0,
        round((pi() * 6378137.0 - ST_YMin(f.g)) / (2 * pi() * 6378137.0 / (256 * 2 ^ zz.z)))::bigint AS y1
    FROM f, generate_series(%5$s, %6$s) AS zz(z)
    WHERE greatest(ST_XMax(f.g) - ST_XMin(f.g), ST_YMax(f.g) - ST_YMin(f.g))
        >= %7$s * 2 * pi() * 6378137.0 / (256 * 2 ^ zz.z)
    AND greatest(ST_XMax(f.g) - ST_XMin(f.g), ST_YMax(f.g) - ST_YMin(f.g))
        < %8$s * 2 * pi() * 6378137.0 / (256 * 2 ^ zz.z)),
i AS (INSERT INTO ioc.tile_merged (layer_id, z, fid, cx, cy, x0, y0, x1, y1, c)
    SELECT %1$L, p.z, p.id, (p.x0 / 16)::int, (p.y0 / 16)::int, p.x0, p.y0,
        greatest(p.x1, p.x0 + 1), greatest(p.y1, p.y0 + 1), p.c
    FROM p RETURNING z, cx, cy)
SELECT array_agg(z), array_agg(cx), array_agg(cy) FROM i$f$, layer, l.id_column,
    CASE WHEN l.srid = 3857 THEN format('t.%I', l.geometry_column)
    ELSE format('ST_Transform(t.%I, 3857)', l.geometry_column) END,
    source, zmin, zmax, visible_px, merge_px,
    CASE WHEN category IS NULL THEN 'NULL::text' ELSE format('t.%I::text', category) END)
$$;

-- Recompute the blocks of these cells (zs, cxs, cys: one cell per position) from
-- ioc.tile_merged: a cell with no member left loses its block. `ctype` is the category
-- column's type (format_type): of the most frequent values, mode() takes the first in the
-- column's own order.
CREATE OR REPLACE FUNCTION ioc.tile_blocks_refresh(
    layer text, ctype text, zs smallint[], cxs int[], cys int[])
RETURNS void LANGUAGE plpgsql AS $$
BEGIN
    IF coalesce(cardinality(zs), 0) = 0 THEN
        RETURN;
    END IF;
    DELETE FROM ioc.tile_blocks b USING unnest(zs, cxs, cys) AS t(z, cx, cy)
    WHERE b.layer_id = layer AND b.z = t.z AND b.cx = t.cx AND b.cy = t.cy;
    EXECUTE format($f$
    WITH m AS (SELECT m.* FROM (SELECT DISTINCT * FROM unnest($2, $3, $4) AS u(z, cx, cy)) t
            JOIN ioc.tile_merged m ON m.layer_id = $1 AND m.z = t.z AND m.cx = t.cx
            AND m.cy = t.cy)
    INSERT INTO ioc.tile_blocks (layer_id, z, cx, cy, n, c, geom)
    SELECT $1, m.z, m.cx, m.cy, count(*), (mode() WITHIN GROUP (ORDER BY m.c::%s))::text,
        ST_Simplify(ST_Union(ST_MakeEnvelope(
            m.x0 * s.px - pi() * 6378137.0, pi() * 6378137.0 - m.y1 * s.px,
            m.x1 * s.px - pi() * 6378137.0, pi() * 6378137.0 - m.y0 * s.px, 3857)), 0)
    FROM m, LATERAL (SELECT 2 * pi() * 6378137.0 / (256 * 2 ^ m.z) AS px) s
    GROUP BY m.z, m.cx, m.cy$f$,
        coalesce(ctype, 'text')) USING layer, zs, cxs, cys;
END $$;

-- The type of a layer's category column (NULL when it has none).
CREATE OR REPLACE FUNCTION ioc.tile_category_type(rel regclass, category text)
RETURNS text LANGUAGE sql STABLE AS $$
SELECT format_type(a.atttypid, a.atttypmod) FROM pg_attribute a
WHERE a.attrelid = rel AND a.attname = category AND NOT a.attisdropped
$$;

-- As sql/0019's, without the merged features (drawn as blocks instead) when merge_px > 0.
CREATE OR REPLACE FUNCTION ioc.tile_shapes_sql(
    layer text, l ioc.layers, source text, zmin int, zmax int, visible_px float8, simplify_px float8,
    properties text[], merge_px float8)
RETURNS text LANGUAGE sql IMMUTABLE AS $$
SELECT format($f$
INSERT INTO ioc.tile_shapes (layer_id, z, fid, geom, props)
SELECT %1$L, zz.z, f.id, ST_Simplify(f.g, %7$s * 2 * pi() * 6378137.0 / (256 * 2 ^ zz.z), true), f.p
FROM (SELECT t.%2$I AS id, %3$s AS g, %9$s AS p FROM %4$s t) f, generate_series(%5$s, %6$s) AS zz(z)
WHERE greatest(ST_XMax(f.g) - ST_XMin(f.g), ST_YMax(f.g) - ST_YMin(f.g))
    >= greatest(%8$s, %10$s) * 2 * pi() * 6378137.0 / (256 * 2 ^ zz.z)
ORDER BY zz.z, f.g$f$, layer, l.id_column,
    CASE WHEN l.srid = 3857 THEN format('t.%I', l.geometry_column)
    ELSE format('ST_Transform(t.%I, 3857)', l.geometry_column) END,
    source, zmin, zmax, simplify_px, visible_px, ioc.tile_props_sql(properties), merge_px)
$$;
DROP FUNCTION IF EXISTS ioc.tile_shapes_sql(text, ioc.layers, text, int, int, float8, float8, text[]);

-- As sql/0019's, with merge_px: the polygons (not lines) of a layer whose manifest says
-- tiles: {merge: true} (many small shapes: buildings, parcels) are merged under it, the blocks'
-- category is style.by. Opt-in: a choropleth's small cells (hexbins, a grid) keep their own
-- values.
DROP FUNCTION IF EXISTS ioc.tile_lowzoom_build(text, int, int, int, float8, float8);
CREATE OR REPLACE FUNCTION ioc.tile_lowzoom_build(
    p_layer text,
    p_grid int DEFAULT 32,
    p_cluster_max_zoom int DEFAULT 13,
    p_shapes_max_zoom int DEFAULT 13,
    p_visible_px float8 DEFAULT 1.0,
    p_simplify_px float8 DEFAULT 0.25,
    p_merge_px float8 DEFAULT 2.0)
RETURNS text LANGUAGE plpgsql AS $$
DECLARE
    l ioc.layers;
    rel regclass;
    src text;
    k text := 'none';
    zmin int;
    zmax int := -1;
    cat text;
    props text[];
    merge float8 := 0;
    zs smallint[];
    cxs int[];
    cys int[];
BEGIN
    SELECT * INTO l FROM ioc.layers WHERE id = p_layer;
    IF NOT FOUND THEN
        RETURN NULL;
    END IF;
    src := format('%I.%I', l.schema_name, l.table_name);
    SELECT c.oid INTO rel FROM pg_class c WHERE c.oid = to_regclass(src) AND c.relkind = 'r';
    IF rel IS NULL THEN
        RETURN NULL;
    END IF;
    -- One build at a time per layer (a first write's lazy build may race a seed's).
    PERFORM pg_advisory_xact_lock(hashtext('ioc.tile_lowzoom'), hashtext(p_layer));
    DELETE FROM ioc.tile_cells WHERE layer_id = p_layer;
    DELETE FROM ioc.tile_shapes WHERE layer_id = p_layer;
    DELETE FROM ioc.tile_merged WHERE layer_id = p_layer;
    DELETE FROM ioc.tile_blocks WHERE layer_id = p_layer;
    zmin := greatest(coalesce((l.manifest #>> '{zoom,min}')::int, 0), 0);
    cat := l.manifest #>> '{style,by}';
    IF ioc.tile_category_type(rel, cat) IS NULL THEN
        cat := NULL;
    END IF;
    IF l.geometry_type IN ('Point', 'MultiPoint') THEN
        IF coalesce((l.manifest #>> '{tiles,cluster}')::boolean, true) THEN
            k := 'points';
            zmax := coalesce((l.manifest #>> '{tiles,cluster_max_zoom}')::int, p_cluster_max_zoom);
        END IF;
    ELSIF (SELECT format_type(a.atttypid, NULL) FROM pg_attribute a
           WHERE a.attrelid = rel AND a.attname = l.id_column) IN ('smallint', 'integer', 'bigint')
    THEN
        k := 'shapes';
        zmax := p_shapes_max_zoom;
        props := ioc.tile_shape_properties(l, rel);
        IF l.geometry_type IN ('Polygon', 'MultiPolygon')
            AND coalesce((l.manifest #>> '{tiles,merge}')::boolean, false) THEN
            merge := p_merge_px;
        END IF;
    END IF;
    IF zmin > zmax THEN
        k := 'none';
    END IF;
    INSERT INTO ioc.tile_lowzoom AS m (layer_id, relid, kind, min_zoom, max_zoom, grid, category,
        visible_px, simplify_px, properties, merge_px)
    VALUES (p_layer, rel, k, zmin, greatest(zmax, zmin), p_grid, cat, p_visible_px, p_simplify_px,
        props, merge)
    ON CONFLICT (layer_id) DO UPDATE SET relid = EXCLUDED.relid, kind = EXCLUDED.kind,
        min_zoom = EXCLUDED.min_zoom, max_zoom = EXCLUDED.max_zoom, grid = EXCLUDED.grid,
        category = EXCLUDED.category, visible_px = EXCLUDED.visible_px,
        simplify_px = EXCLUDED.simplify_px, properties = EXCLUDED.properties,
        merge_px = EXCLUDED.merge_px, built_at = now();
    PERFORM ioc.tile_lowzoom_attach(rel);
    IF k = 'points' THEN
        -- The finest zoom from the rows, then each coarser zoom from the one below it
        -- (a cell is exactly four cells of the next zoom).
        EXECUTE ioc.tile_cells_sql(p_layer, ioc.tile_points_sql(l, cat, src, 1), zmax, zmax, p_grid);
        FOR zz IN REVERSE zmax - 1 .. zmin LOOP
            INSERT INTO ioc.tile_cells (layer_id, z, x, y, i, j, c, n, sx, sy)
            SELECT p_layer, zz, q.gi / p_grid, q.gj / p_grid, q.gi % p_grid, q.gj % p_grid, q.c,
                sum(q.n), sum(q.sx), sum(q.sy)
            FROM (SELECT (t.x::bigint * p_grid + t.i) / 2 AS gi, (t.y::bigint * p_grid + t.j) / 2 AS gj,
                    t.c, t.n, t.sx, t.sy
                FROM ioc.tile_cells t WHERE t.layer_id = p_layer AND t.z = zz + 1) q
            GROUP BY q.gi, q.gj, q.c;
        END LOOP;
    ELSIF k = 'shapes' THEN
        EXECUTE ioc.tile_shapes_sql(p_layer, l, src, zmin, zmax, p_visible_px, p_simplify_px,
            props, merge);
        IF merge > 0 THEN
            EXECUTE ioc.tile_merged_sql(p_layer, l, src, zmin, zmax, p_visible_px, merge, cat)
                INTO zs, cxs, cys;
            PERFORM ioc.tile_blocks_refresh(p_layer, ioc.tile_category_type(rel, cat), zs, cxs, cys);
        END IF;
    END IF;
    RETURN k;
END $$;

-- As sql/0019's; shapes: the merged features and the blocks of the cells they leave or join
-- (or whose category changed) follow every write.
CREATE OR REPLACE FUNCTION ioc.tile_lowzoom_sync() RETURNS trigger
LANGUAGE plpgsql AS $$
DECLARE
    m ioc.tile_lowzoom;
    l ioc.layers;
    src_new text := 'ioc_new';
    src_old text := 'ioc_old';
    points text;
    emptied tid[];
    zs smallint[];
    cxs int[];
    cys int[];
    z2 smallint[];
    cx2 int[];
    cy2 int[];
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
        DELETE FROM ioc.tile_merged WHERE layer_id = m.layer_id;
        DELETE FROM ioc.tile_blocks WHERE layer_id = m.layer_id;
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
        RETURN NULL;
    END IF;
    IF TG_OP <> 'INSERT' THEN
        EXECUTE format('DELETE FROM ioc.tile_shapes s USING %s o'
            ' WHERE s.layer_id = $1 AND s.fid = o.%I', src_old, l.id_column) USING m.layer_id;
    END IF;
    IF TG_OP <> 'DELETE' THEN
        EXECUTE ioc.tile_shapes_sql(m.layer_id, l, src_new, m.min_zoom, m.max_zoom,
            m.visible_px, m.simplify_px, m.properties, m.merge_px);
    END IF;
    IF TG_OP = 'UPDATE' AND m.properties IS NOT NULL THEN
        -- Rows just inserted above already hold their props: only the unmoved ones are
        -- written, and only when a copied column changed (a reading leaves them alone).
        EXECUTE format('UPDATE ioc.tile_shapes s SET props = n.p FROM (SELECT t.%I AS id,'
            ' %s AS p FROM ioc_new t) n WHERE s.layer_id = $1 AND s.fid = n.id'
            ' AND s.props IS DISTINCT FROM n.p', l.id_column, ioc.tile_props_sql(m.properties))
            USING m.layer_id;
    END IF;
    IF m.merge_px > 0 THEN
        IF TG_OP <> 'INSERT' THEN
            EXECUTE format('WITH d AS (DELETE FROM ioc.tile_merged s USING %s o'
                ' WHERE s.layer_id = $1 AND s.fid = o.%I RETURNING s.z, s.cx, s.cy)'
                ' SELECT array_agg(z), array_agg(cx), array_agg(cy) FROM d', src_old, l.id_column)
                INTO zs, cxs, cys USING m.layer_id;
        END IF;
        IF TG_OP <> 'DELETE' THEN
            EXECUTE ioc.tile_merged_sql(m.layer_id, l, src_new, m.min_zoom, m.max_zoom,
                m.visible_px, m.merge_px, m.category) INTO z2, cx2, cy2;
            zs := zs || z2;
            cxs := cxs || cx2;
            cys := cys || cy2;
        END IF;
        IF TG_OP = 'UPDATE' AND m.category IS NOT NULL THEN
            -- Unmoved members whose category changed: their blocks' dominant one may too.
            EXECUTE format('WITH u AS (UPDATE ioc.tile_merged s SET c = n.c FROM (SELECT t.%I'
                ' AS id, t.%I::text AS c FROM ioc_new t) n WHERE s.layer_id = $1'
                ' AND s.fid = n.id AND s.c IS DISTINCT FROM n.c RETURNING s.z, s.cx, s.cy)'
                ' SELECT array_agg(z), array_agg(cx), array_agg(cy) FROM u',
                l.id_column, m.category) INTO z2, cx2, cy2 USING m.layer_id;
            zs := zs || z2;
            cxs := cxs || cx2;
            cys := cys || cy2;
        END IF;
        PERFORM ioc.tile_blocks_refresh(m.layer_id, ioc.tile_category_type(m.relid, m.category),
            zs, cxs, cys);
    END IF;
    RETURN NULL;
END $$;

CREATE OR REPLACE FUNCTION ioc.tile_lowzoom_forget() RETURNS trigger
LANGUAGE plpgsql AS $$
BEGIN
    DELETE FROM ioc.tile_cells c USING gone g WHERE c.layer_id = g.layer_id;
    DELETE FROM ioc.tile_shapes s USING gone g WHERE s.layer_id = g.layer_id;
    DELETE FROM ioc.tile_merged s USING gone g WHERE s.layer_id = g.layer_id;
    DELETE FROM ioc.tile_blocks s USING gone g WHERE s.layer_id = g.layer_id;
    RETURN NULL;
END $$;

-- Existing shapes layers that merge, with the settings they were built with.
SELECT ioc.tile_lowzoom_build(m.layer_id, m.grid, m.max_zoom, m.max_zoom, m.visible_px,
    m.simplify_px, 2.0)
FROM ioc.tile_lowzoom m JOIN ioc.layers l ON l.id = m.layer_id
WHERE m.kind = 'shapes' AND coalesce((l.manifest #>> '{tiles,merge}')::boolean, false)
ORDER BY m.layer_id;
