-- Generalised tiles carry their attributes (issue 20, dense z12 polygon tiles). Until now a tile
-- read its shapes from ioc.tile_shapes and joined back to the layer's rows for the attributes:
-- one heap page per feature (a dense z12 buildings tile, 6,872 features: 27,500 buffer reads,
-- half the statement). Each stored shape now holds the attributes the tile may carry, as jsonb
-- (props), kept by the same statement triggers, including updates that change only them;
-- ioc.tile_lowzoom.properties records which columns were copied, and the tile SQL reads props
-- only when they hold every column it needs (else it joins back as before).
ALTER TABLE ioc.tile_lowzoom ADD COLUMN IF NOT EXISTS properties text[];
ALTER TABLE ioc.tile_shapes ADD COLUMN IF NOT EXISTS props jsonb;

-- The columns of `rel` a tile of layer `l` may carry (tiles.sql.tile_properties picks from
-- these): the id attribute, style.by, every label-like column (tile_properties takes the first
-- of them the catalog has), the time attribute and the manifest's tiles.properties. A superset
-- is harmless; the tile SQL checks its own list against it.
CREATE OR REPLACE FUNCTION ioc.tile_shape_properties(l ioc.layers, rel regclass)
RETURNS text[] LANGUAGE sql STABLE AS $$
SELECT coalesce(array_agg(a.attname::text ORDER BY a.attnum), '{}')
FROM pg_attribute a
WHERE a.attrelid = rel AND a.attnum > 0 AND NOT a.attisdropped
    AND a.attname NOT IN (l.id_column, l.geometry_column)
    AND a.attname IN (
        SELECT w FROM unnest(ARRAY[l.manifest ->> 'id_attribute', l.manifest #>> '{style,by}',
                'name', 'name_vi', 'ten', 'ten_vi', 'label', 'title',
                l.manifest ->> 'time_attribute']) w
        UNION ALL
        SELECT jsonb_array_elements_text(CASE WHEN jsonb_typeof(l.manifest #> '{tiles,properties}')
            = 'array' THEN l.manifest #> '{tiles,properties}' ELSE '[]' END))
$$;

-- SQL for the props of a row aliased t: jsonb_build_object of the columns (each value as
-- to_jsonb gives it; the tile reads them back with jsonb_populate_record in the column's type).
-- jsonb_build_object takes at most 100 arguments: 40 columns per call, concatenated.
CREATE OR REPLACE FUNCTION ioc.tile_props_sql(properties text[])
RETURNS text LANGUAGE sql IMMUTABLE AS $$
SELECT coalesce(string_agg(part, ' || '), '''{}''::jsonb') FROM (
    SELECT format('jsonb_build_object(%s)', string_agg(format('%L, t.%I', p, p), ', ' ORDER BY n)) AS part
    FROM unnest(properties) WITH ORDINALITY AS u(p, n)
    GROUP BY (n - 1) / 40 ORDER BY (n - 1) / 40) c
$$;

-- As sql/0017's, with the props of each row.
CREATE OR REPLACE FUNCTION ioc.tile_shapes_sql(
    layer text, l ioc.layers, source text, zmin int, zmax int, visible_px float8, simplify_px float8,
    properties text[])
RETURNS text LANGUAGE sql IMMUTABLE AS $$
SELECT format($f$
INSERT INTO ioc.tile_shapes (layer_id, z, fid, geom, props)
SELECT %1$L, zz.z, f.id, ST_Simplify(f.g, %7$s * 2 * pi() * 6378137.0 / (256 * 2 ^ zz.z), true), f.p
FROM (SELECT t.%2$I AS id, %3$s AS g, %9$s AS p FROM %4$s t) f, generate_series(%5$s, %6$s) AS zz(z)
WHERE greatest(ST_XMax(f.g) - ST_XMin(f.g), ST_YMax(f.g) - ST_YMin(f.g))
    >= %8$s * 2 * pi() * 6378137.0 / (256 * 2 ^ zz.z)
ORDER BY zz.z, f.g$f$, layer, l.id_column,
    CASE WHEN l.srid = 3857 THEN format('t.%I', l.geometry_column)
    ELSE format('ST_Transform(t.%I, 3857)', l.geometry_column) END,
    source, zmin, zmax, simplify_px, visible_px, ioc.tile_props_sql(properties))
$$;
DROP FUNCTION IF EXISTS ioc.tile_shapes_sql(text, ioc.layers, text, int, int, float8, float8);

-- As sql/0012's, recording and storing the props columns of a shapes layer.
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
    props text[];
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
        props := ioc.tile_shape_properties(l, rel);
    END IF;
    IF zmin > zmax THEN
        k := 'none';
    END IF;
    INSERT INTO ioc.tile_lowzoom AS m (layer_id, relid, kind, min_zoom, max_zoom, grid, category,
        visible_px, simplify_px, properties)
    VALUES (p_layer, rel, k, zmin, greatest(zmax, zmin), p_grid, cat, p_visible_px, p_simplify_px,
        props)
    ON CONFLICT (layer_id) DO UPDATE SET relid = EXCLUDED.relid, kind = EXCLUDED.kind,
        min_zoom = EXCLUDED.min_zoom, max_zoom = EXCLUDED.max_zoom, grid = EXCLUDED.grid,
        category = EXCLUDED.category, visible_px = EXCLUDED.visible_px,
        simplify_px = EXCLUDED.simplify_px, properties = EXCLUDED.properties, built_at = now();
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
        EXECUTE ioc.tile_shapes_sql(p_layer, l, src, zmin, zmax, p_visible_px, p_simplify_px, props);
    END IF;
    RETURN k;
END $$;

-- As sql/0014's; shapes: an UPDATE also rewrites the props of the rows whose copied columns
-- changed while their geometry did not (a style category set by an item write).
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
                m.visible_px, m.simplify_px, m.properties);
        END IF;
        IF TG_OP = 'UPDATE' AND m.properties IS NOT NULL THEN
            -- Rows just inserted above already hold their props: only the unmoved ones are
            -- written, and only when a copied column changed (a reading leaves them alone).
            EXECUTE format('UPDATE ioc.tile_shapes s SET props = n.p FROM (SELECT t.%I AS id,'
                ' %s AS p FROM ioc_new t) n WHERE s.layer_id = $1 AND s.fid = n.id'
                ' AND s.props IS DISTINCT FROM n.p', l.id_column, ioc.tile_props_sql(m.properties))
                USING m.layer_id;
        END IF;
    END IF;
    RETURN NULL;
END $$;

-- Existing shapes layers, with the settings they were built with, so their rows get props.
SELECT ioc.tile_lowzoom_build(layer_id, grid, max_zoom, max_zoom, visible_px, simplify_px)
FROM ioc.tile_lowzoom WHERE kind = 'shapes' ORDER BY layer_id;
