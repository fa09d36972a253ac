-- Low-zoom tiles (issue 20, item 1): what a tile at city zoom reads instead of every row.
--
-- Point layers: per-zoom aggregates on a grid aligned with the tiles (ioc.tile_cells: count,
-- centroid sums, per category of style.by), so a z10 tile sums at most grid² cells × categories.
-- Line and polygon layers: per zoom band, the features visible at that zoom (bounding box at
-- least visible_px pixels wide or tall), pre-transformed to EPSG:3857 and pre-simplified
-- (ioc.tile_shapes), so an empty zoom is an index probe and a full one skips the projection.
-- Both are built once per layer (ioc.tile_lowzoom_build) and then kept current by statement
-- triggers with transition tables on the layer's table (one upsert per write statement).
-- ioc.tile_lowzoom records how each layer was built; tile SQL uses the tables only when that
-- matches its own settings and the live table (relid), and otherwise reads the rows as before.
CREATE EXTENSION IF NOT EXISTS btree_gist;

CREATE TABLE IF NOT EXISTS ioc.tile_lowzoom (
    layer_id    text PRIMARY KEY REFERENCES ioc.layers (id) ON DELETE CASCADE,
    relid       oid NOT NULL,
    kind        text NOT NULL CHECK (kind IN ('points', 'shapes', 'none')),
    min_zoom    smallint NOT NULL,
    max_zoom    smallint NOT NULL,
    grid        integer NOT NULL,           -- points: cells per tile side
    category    text,                       -- points: the style.by column, NULL for none
    visible_px  double precision NOT NULL,  -- shapes: drawn from the zoom where this big
    simplify_px double precision NOT NULL,  -- shapes: simplification tolerance in pixels
    built_at    timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX IF NOT EXISTS tile_lowzoom_relid ON ioc.tile_lowzoom (relid);

-- (x, y) is the tile at zoom z, (i, j) the cell inside it (i rightwards, j downwards), so a
-- tile's cells are one index range and every point is in exactly one cell per zoom.
CREATE TABLE IF NOT EXISTS ioc.tile_cells (
    layer_id text NOT NULL,
    z        smallint NOT NULL,
    x        integer NOT NULL,
    y        integer NOT NULL,
    i        smallint NOT NULL,
    j        smallint NOT NULL,
    c        text,                          -- category (style.by as text), NULL is a category
    n        integer NOT NULL,
    sx       double precision NOT NULL,     -- sums of EPSG:3857 x and y (centroid = sum / n)
    sy       double precision NOT NULL,
    CONSTRAINT tile_cells_key UNIQUE NULLS NOT DISTINCT (layer_id, z, x, y, i, j, c)
);
-- Cells a delete emptied, removed by the same trigger (usually none).
CREATE INDEX IF NOT EXISTS tile_cells_empty ON ioc.tile_cells (layer_id) WHERE n <= 0;

CREATE TABLE IF NOT EXISTS ioc.tile_shapes (
    layer_id text NOT NULL,
    z        smallint NOT NULL,
    fid      bigint NOT NULL,               -- the layer's (integer) id column
    geom     geometry NOT NULL,             -- EPSG:3857, simplified for zoom z
    PRIMARY KEY (layer_id, fid, z)
);
CREATE INDEX IF NOT EXISTS tile_shapes_gist ON ioc.tile_shapes USING gist (layer_id, z, geom);

-- SELECT px, py (EPSG:3857), c (category text), s (sign) of a point layer's rows in `source`:
-- the same arithmetic as the tile SQL's (spherical Mercator for WGS 84, PROJ otherwise).
CREATE OR REPLACE FUNCTION ioc.tile_points_sql(l ioc.layers, category text, source text, sign int)
RETURNS text LANGUAGE plpgsql IMMUTABLE AS $$
DECLARE
    g text := format('t.%I', l.geometry_column);
    x text;
    y text;
BEGIN
    IF l.geometry_type = 'MultiPoint' THEN
        g := format('ST_Centroid(%s)', g);
    END IF;
    IF l.srid = 4326 THEN
        x := format('6378137.0 * radians(ST_X(%s))', g);
        y := format('6378137.0 * ln(tan(pi() / 4 + radians(ST_Y(%s)) / 2))', g);
    ELSE
        IF l.srid <> 3857 THEN
            g := format('ST_Transform(%s, 3857)', g);
        END IF;
        x := format('ST_X(%s)', g);
        y := format('ST_Y(%s)', g);
    END IF;
    -- A row without a geometry is in no cell (the tile SQL's && skips it too).
    RETURN format('SELECT %s AS px, %s AS py, %s AS c, %s AS s FROM %s t WHERE t.%I IS NOT NULL',
        x, y,
        CASE WHEN category IS NULL THEN 'NULL::text' ELSE format('t.%I::text', category) END,
        sign, source, l.geometry_column);
END $$;

-- Add the points of `points` (signed) to the cells of zooms zmin..zmax; drop emptied cells.
CREATE OR REPLACE FUNCTION ioc.tile_cells_sql(layer text, points text, zmin int, zmax int, grid int)
RETURNS text LANGUAGE sql IMMUTABLE AS $$
SELECT format($f$
WITH q AS (SELECT p.px, p.py, p.c, p.s, zz.z,
        floor((p.px + pi() * 6378137.0) / (2 * pi() * 6378137.0 / (%2$s * 2 ^ zz.z)))::bigint AS gi,
        floor((pi() * 6378137.0 - p.py) / (2 * pi() * 6378137.0 / (%2$s * 2 ^ zz.z)))::bigint AS gj
    FROM (%3$s) p, generate_series(%4$s, %5$s) AS zz(z)),
up AS (INSERT INTO ioc.tile_cells AS t (layer_id, z, x, y, i, j, c, n, sx, sy)
    SELECT %1$L, q.z, q.gi / %2$s, q.gj / %2$s, q.gi %% %2$s, q.gj %% %2$s, q.c, sum(q.s),
        sum(q.s * q.px), sum(q.s * q.py)
    FROM q GROUP BY q.z, q.gi, q.gj, q.c ORDER BY q.z, q.gi / %2$s, q.gj / %2$s
    ON CONFLICT ON CONSTRAINT tile_cells_key DO UPDATE
    SET n = t.n + EXCLUDED.n, sx = t.sx + EXCLUDED.sx, sy = t.sy + EXCLUDED.sy
    RETURNING t.n)
SELECT count(*) FILTER (WHERE n <= 0) FROM up$f$, layer, grid, points, zmin, zmax)
$$;

-- The visible features of `source` at zooms zmin..zmax, in EPSG:3857, simplified per zoom.
-- A feature is visible from the zoom where its bounding box is visible_px pixels wide or tall
-- (256 px tiles); it has one row for each zoom from there on.
CREATE OR REPLACE FUNCTION ioc.tile_shapes_sql(
    layer text, l ioc.layers, source text, zmin int, zmax int, visible_px float8, simplify_px float8)
RETURNS text LANGUAGE sql IMMUTABLE AS $$
SELECT format($f$
INSERT INTO ioc.tile_shapes (layer_id, z, fid, geom)
SELECT %1$L, zz.z, f.id, ST_Simplify(f.g, %7$s * 2 * pi() * 6378137.0 / (256 * 2 ^ zz.z), true)
FROM (SELECT t.%2$I AS id, %3$s AS g FROM %4$s t) f, generate_series(%5$s, %6$s) AS zz(z)
WHERE greatest(ST_XMax(f.g) - ST_XMin(f.g), ST_YMax(f.g) - ST_YMin(f.g))
    >= %8$s * 2 * pi() * 6378137.0 / (256 * 2 ^ zz.z)
ORDER BY zz.z, f.id$f$, layer, l.id_column,
    CASE WHEN l.srid = 3857 THEN format('t.%I', l.geometry_column)
    ELSE format('ST_Transform(t.%I, 3857)', l.geometry_column) END,
    source, zmin, zmax, simplify_px, visible_px)
$$;

-- The statement triggers that keep a layer table's low-zoom rows current (idempotent; plain
-- tables only: views and foreign tables are read as before).
CREATE OR REPLACE FUNCTION ioc.tile_lowzoom_attach(rel regclass) RETURNS void
LANGUAGE plpgsql AS $$
BEGIN
    IF (SELECT relkind FROM pg_class WHERE oid = rel) IS DISTINCT FROM 'r'
        OR (SELECT count(*) FROM pg_trigger WHERE tgrelid = rel AND tgname LIKE 'ioc_tiles_%') = 4
    THEN
        RETURN;
    END IF;
    EXECUTE format('CREATE OR REPLACE TRIGGER ioc_tiles_insert AFTER INSERT ON %s'
        ' REFERENCING NEW TABLE AS ioc_new FOR EACH STATEMENT'
        ' EXECUTE FUNCTION ioc.tile_lowzoom_sync()', rel);
    EXECUTE format('CREATE OR REPLACE TRIGGER ioc_tiles_update AFTER UPDATE ON %s'
        ' REFERENCING OLD TABLE AS ioc_old NEW TABLE AS ioc_new FOR EACH STATEMENT'
        ' EXECUTE FUNCTION ioc.tile_lowzoom_sync()', rel);
    EXECUTE format('CREATE OR REPLACE TRIGGER ioc_tiles_delete AFTER DELETE ON %s'
        ' REFERENCING OLD TABLE AS ioc_old FOR EACH STATEMENT'
        ' EXECUTE FUNCTION ioc.tile_lowzoom_sync()', rel);
    EXECUTE format('CREATE OR REPLACE TRIGGER ioc_tiles_truncate AFTER TRUNCATE ON %s'
        ' FOR EACH STATEMENT EXECUTE FUNCTION ioc.tile_lowzoom_sync()', rel);
END $$;

-- (Re)build a layer's low-zoom rows from its table; returns the kind built, NULL when the
-- layer has no plain table. Defaults are TileSettings' defaults (checked by the tests).
CREATE OR REPLACE FUNCTION ioc.tile_lowzoom_build(
    p_layer text,
    p_grid int DEFAULT 32,
    p_cluster_max_zoom int DEFAULT 13,
    p_shapes_max_zoom int DEFAULT 13,
    p_visible_px float8 DEFAULT 1.0,
    p_simplify_px float8 DEFAULT 0.25)
RETURNS text LANGUAGE plpgsql AS $$
DECLARE
    l ioc.layers;
    rel regclass;
    src text;
    k text := 'none';
    zmin int;
    zmax int := -1;
    cat text;
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
    zmin := greatest(coalesce((l.manifest #>> '{zoom,min}')::int, 0), 0);
    IF l.geometry_type IN ('Point', 'MultiPoint') THEN
        IF coalesce((l.manifest #>> '{tiles,cluster}')::boolean, true) THEN
            k := 'points';
            zmax := coalesce((l.manifest #>> '{tiles,cluster_max_zoom}')::int, p_cluster_max_zoom);
            cat := l.manifest #>> '{style,by}';
            IF NOT EXISTS (SELECT 1 FROM pg_attribute a WHERE a.attrelid = rel
                           AND a.attname = cat AND NOT a.attisdropped) THEN
                cat := NULL;
            END IF;
        END IF;
    ELSIF (SELECT format_type(a.atttypid, NULL) FROM pg_attribute a
           WHERE a.attrelid = rel AND a.attname = l.id_column) IN ('smallint', 'integer', 'bigint')
    THEN
        k := 'shapes';
        zmax := p_shapes_max_zoom;
    END IF;
    IF zmin > zmax THEN
        k := 'none';
    END IF;
    INSERT INTO ioc.tile_lowzoom AS m
        (layer_id, relid, kind, min_zoom, max_zoom, grid, category, visible_px, simplify_px)
    VALUES (p_layer, rel, k, zmin, greatest(zmax, zmin), p_grid, cat, p_visible_px, p_simplify_px)
    ON CONFLICT (layer_id) DO UPDATE SET relid = EXCLUDED.relid, kind = EXCLUDED.kind,
        min_zoom = EXCLUDED.min_zoom, max_zoom = EXCLUDED.max_zoom, grid = EXCLUDED.grid,
        category = EXCLUDED.category, visible_px = EXCLUDED.visible_px,
        simplify_px = EXCLUDED.simplify_px, built_at = now();
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
        EXECUTE ioc.tile_shapes_sql(p_layer, l, src, zmin, zmax, p_visible_px, p_simplify_px);
    END IF;
    RETURN k;
END $$;

-- The layer tables' statement trigger: apply the statement's rows (transition tables) to the
-- low-zoom rows. The transition tables are visible only to SQL this function itself runs,
-- hence the helpers return SQL text instead of running it.
CREATE OR REPLACE FUNCTION ioc.tile_lowzoom_sync() RETURNS trigger
LANGUAGE plpgsql AS $$
DECLARE
    m ioc.tile_lowzoom;
    l ioc.layers;
    points text;
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
    IF m.kind = 'points' THEN
        points := concat_ws(' UNION ALL ',
            CASE WHEN TG_OP <> 'DELETE' THEN ioc.tile_points_sql(l, m.category, 'ioc_new', 1) END,
            CASE WHEN TG_OP <> 'INSERT' THEN ioc.tile_points_sql(l, m.category, 'ioc_old', -1) END);
        EXECUTE ioc.tile_cells_sql(m.layer_id, points, m.min_zoom, m.max_zoom, m.grid);
        DELETE FROM ioc.tile_cells WHERE layer_id = m.layer_id AND n <= 0;
    ELSE
        IF TG_OP <> 'INSERT' THEN
            EXECUTE format('DELETE FROM ioc.tile_shapes s USING ioc_old o'
                ' WHERE s.layer_id = $1 AND s.fid = o.%I', l.id_column) USING m.layer_id;
        END IF;
        IF TG_OP <> 'DELETE' THEN
            EXECUTE ioc.tile_shapes_sql(m.layer_id, l, 'ioc_new', m.min_zoom, m.max_zoom,
                m.visible_px, m.simplify_px);
        END IF;
    END IF;
    RETURN NULL;
END $$;

-- Existing layers, with the default settings (`ioc seed` rebuilds with the configured ones).
SELECT ioc.tile_lowzoom_build(id) FROM ioc.layers WHERE deleted_at IS NULL ORDER BY id;
