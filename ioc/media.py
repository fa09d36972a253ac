"""The media types ioc speaks, named once (the shared kernel: features, tiles, queries, addresses
and the HTTP layer all use them)."""

from __future__ import annotations

JSON = "application/json"
HTML = "text/html"
GEOJSON = "application/geo+json"
GEOJSON_SEQ = "application/geo+json-seq"
NDJSON = "application/x-ndjson"  # newline-delimited GeoJSON, one Feature a line
CSV = "text/csv"
CSV_UTF8 = "text/csv; charset=utf-8"
SCHEMA_JSON = "application/schema+json"
MVT = "application/vnd.mapbox-vector-tile"
GEOPACKAGE = "application/geopackage+sqlite3"
OPENAPI_JSON = "application/vnd.oai.openapi+json;version=3.0"
