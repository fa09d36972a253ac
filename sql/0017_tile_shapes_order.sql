-- Low-zoom shapes stored by place (issue 20, dense z12 tiles). sql/0012 inserted a build's
-- rows in (zoom, feature id) order, so one dense tile's ~7,000 shapes were spread over ~490
-- heap pages; ordered by geometry within a zoom (PostGIS >= 3.1 sorts geometries along a
-- Hilbert curve of their box centres) they sit on ~170. Only the insert's ORDER BY changes;
-- rows built before this migration keep their order until the layer is built again.
CREATE OR REPLACE FUNCTION ioc.tile_shapes_sql(
    layer text, l ioc.layers, source text, zmin int, zmax int, visible_px float8, simplify_px float8)
RETURNS text LANGUAGE sql IMMUTABLE AS $$
SELECT format($f$
INSERT INTO ioc.tile_shapes (layer_id, z, fid, geom)
SELECT %1$L, zz.z, f.id, ST_Simplify(f.g, %7$s * 2 * pi() * 6378137.0 / (256 * 2 ^ zz.z), true)
FROM (SELECT t.%2$I AS id, %3$s AS g FROM %4$s t) f, generate_series(%5$s, %6$s) AS zz(z)
WHERE greatest(ST_XMax(f.g) - ST_XMin(f.g), ST_YMax(f.g) - ST_YMin(f.g))
    >= %8$s * 2 * pi() * 6378137.0 / (256 * 2 ^ zz.z)
ORDER BY zz.z, f.g$f$, layer, l.id_column,
    CASE WHEN l.srid = 3857 THEN format('t.%I', l.geometry_column)
    ELSE format('ST_Transform(t.%I, 3857)', l.geometry_column) END,
    source, zmin, zmax, simplify_px, visible_px)
$$;
