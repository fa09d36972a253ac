"""Vector tiles: OGC API - Tiles paths, short XYZ and composite tiles, TileJSON, MapLibre styles.

Tile answers: 200 with an MVT (gzip-encoded when the client accepts it), or **204 No Content**
when the tile has no feature — including every tile outside a layer's zoom range (OGC API -
Tiles allows 204 for empty tiles; MapLibre treats it as an empty tile). 404 for a layer the
caller may not read, or a tile outside the tile matrix.

Tile URLs handed out by TileJSON carry ``?v=<event>.<digest>`` (tiles.versions): a public tile
still as of that version is ``immutable``; unversioned URLs are revalidated by ETag.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Annotated, Any

from fastapi import APIRouter, Depends, Path, Request, Response

from api.deps import CatalogDep, PrincipalDep
from api.openapi import Responses
from api.tile_answer import tile_answer
from api.urls import base_url
from ioc.catalog.access import Principal
from ioc.catalog.layers import Catalog
from ioc.errors import InvalidParameter
from ioc.media import JSON, MVT
from tiles import tilejson as tj
from tiles.render import MAX_ZOOM, Tile, TileService, all_public, resolve_layers
from tiles.settings import TileSettings
from tiles.style import maplibre_style
from tiles.versions import current_version, judge, parse_version

router = APIRouter(tags=["tiles"])
TMS = "WebMercatorQuad"
Ids = Annotated[str, Path(description="Layer id, or several separated by commas")]
TILE_RESPONSES: Responses = {
    200: {"content": {MVT: {}}, "description": "Mapbox Vector Tile"},
    204: {"description": "Empty tile (no feature, or outside the zoom range)"},
    304: {"description": "Not modified (ETag)"},
}


def _json_answer(schema: dict[str, Any]) -> Responses:
    return {200: {"content": {JSON: {"schema": schema}}}}


Strings = {"type": "array", "items": {"type": "string"}}
Zoom = {"type": "integer", "minimum": 0, "maximum": MAX_ZOOM}
# What clients rely on (TileJSON 3.0.0, MapLibre style spec v8), checked by the schemathesis test.
TILEJSON_ANSWER = _json_answer(
    {
        "required": ["tilejson", "tiles", "vector_layers"],
        "properties": {
            "tilejson": {"type": "string", "pattern": r"^3\.0\.\d+$"},
            "tiles": {**Strings, "minItems": 1},
            "minzoom": Zoom,
            "maxzoom": Zoom,
            "bounds": {"type": "array", "items": {"type": "number"}, "minItems": 4, "maxItems": 4},
            "center": {"type": "array", "items": {"type": "number"}, "minItems": 2, "maxItems": 3},
            "vector_layers": {
                "type": "array",
                "items": {
                    "type": "object",
                    "required": ["id", "fields"],
                    "properties": {
                        "id": {"type": "string"},
                        "minzoom": Zoom,
                        "maxzoom": Zoom,
                        "fields": {"type": "object", "additionalProperties": {"type": "string"}},
                    },
                },
            },
        },
    }
)
STYLE_ANSWER = _json_answer(
    {
        "required": ["version", "sources", "layers"],
        "properties": {
            "version": {"const": 8},
            "sources": {"type": "object"},
            "layers": {
                "type": "array",
                "items": {
                    "type": "object",
                    "required": ["id", "type"],
                    "properties": {
                        "id": {"type": "string"},
                        "type": {"type": "string"},
                        "source": {"type": "string"},
                        "source-layer": {"type": "string"},
                    },
                },
            },
        },
    }
)


async def get_tile_service(request: Request) -> TileService:
    """The process's tile service (``async def`` on purpose: FastAPI runs a plain ``def``
    dependency in the thread pool, a hop that costs more than serving a cached tile)."""
    return request.app.state.tiles


TilesDep = Annotated[TileService, Depends(get_tile_service)]


async def fresh_catalog(catalog: CatalogDep, tiles: TilesDep) -> Catalog:
    """The catalog (reloaded by the app's watcher when another process changed the registry);
    depending on the tile service registers it as a listener of those changes."""
    return catalog


FreshCatalogDep = Annotated[Catalog, Depends(fresh_catalog)]


@dataclass(frozen=True)
class TileContext:
    """Everything a tile handler needs, resolved by one dependency (each dependency costs
    FastAPI tens of microseconds: a cached tile costs a few hundred in all)."""

    request: Request
    pool: Any
    tiles: TileService
    catalog: Catalog
    principal: Principal


async def tile_context(request: Request, principal: Principal) -> TileContext:
    """The pool, the tile service, the fresh catalog and the caller."""
    tiles = await get_tile_service(request)
    catalog = await request.app.state.current_catalog()
    return TileContext(request, request.app.state.pool, tiles, catalog, principal)


ContextDep = Annotated[TileContext, Depends(tile_context)]


def tile_response(
    request: Request, tile: Tile, public: bool, settings: TileSettings, freshness=None
) -> Response:
    """The HTTP answer of a tile (see api.tile_answer)."""
    status, headers, body = tile_answer(
        tile,
        public,
        settings,
        request.headers.get("if-none-match", ""),
        request.headers.get("accept-encoding", ""),
        freshness,
    )
    return Response(body, status_code=status, headers=headers)


async def serve_tile(ctx: TileContext, ids: str, z: int, x: int, y: int) -> Response:
    """Resolve the readable layers, get the tile, format the answer."""
    layers = resolve_layers(ctx.catalog, ctx.principal, ids)
    version = parse_version(ctx.request.query_params.getlist("v"))  # docs/scaling.md
    # A replica within the lag budget that holds the layers' changes (docs/scaling.md).
    pool = ctx.request.app.state.read_pool(layer.id for layer in layers)
    tile = await ctx.tiles.get_tile(pool, layers, z, x, y)
    ctx.request.app.state.tile_sources[tile.source] += 1  # cache hits and misses (/metrics)
    public = all_public(ctx.catalog, ids)
    freshness = judge(ctx.tiles, layers, version, tile, z, x, y) if version else None
    return tile_response(ctx.request, tile, public, ctx.tiles.settings, freshness)


def _parameters(*specs: tuple[str, str]) -> dict:
    """OpenAPI path parameters of the tile handlers (which parse them by hand)."""

    def schema(name: str) -> dict:
        if name in ("layers", "collectionId"):
            return {"type": "string"}
        return {"type": "integer", "minimum": 0}

    return {
        "parameters": [
            {
                "name": name,
                "in": "path",
                "required": True,
                "description": text,
                "schema": schema(name),
            }
            for name, text in specs
        ]
        + [VERSION_PARAMETER]
    }


# tiles.versions: what TileJSON hands out; a current one is answered `immutable`.
VERSION_PARAMETER = {
    "name": "v",
    "in": "query",
    "required": False,
    "description": "Tile version from a TileJSON URL template (docs/scaling.md)",
    "schema": {"type": "string", "pattern": r"^\d{1,18}\.[0-9a-f]{8}$"},
}


def path_int(request: Request, name: str, high: int | None = None) -> int:
    """An integer path parameter, or InvalidParameter (400)."""
    text = request.path_params[name]
    if not text.isdigit() or (high is not None and int(text) > high):
        limit = f" from 0 to {high}" if high is not None else ""
        raise InvalidParameter(f"'{name}' must be an integer{limit}.", parameter=name)
    return int(text)


@router.get(
    "/collections/{collectionId}/tiles/WebMercatorQuad/{tileMatrix}/{tileRow}/{tileCol}",
    summary="A vector tile of one layer (OGC API - Tiles)",
    responses=TILE_RESPONSES,
    response_class=Response,
    openapi_extra=_parameters(
        ("collectionId", "Layer id"),
        ("tileMatrix", "Zoom level 0-24"),
        ("tileRow", "Row (y)"),
        ("tileCol", "Column (x)"),
    ),
)
async def collection_tile(request: Request, principal: PrincipalDep) -> Response:
    """One layer's tile; the path order is the standard's: tileMatrix/tileRow/tileCol = z/y/x.

    Tile handlers take only the request and the caller: path parameters are parsed by hand
    because FastAPI's per-parameter validation costs more than serving a cached tile."""
    ctx = await tile_context(request, principal)
    collection_id = request.path_params["collectionId"]
    ctx.catalog.get(collection_id, ctx.principal)  # 404 naming the right parameter
    z = path_int(request, "tileMatrix", MAX_ZOOM)
    y, x = path_int(request, "tileRow"), path_int(request, "tileCol")
    return await serve_tile(ctx, collection_id, z, x, y)


@router.get(
    "/tiles/{layers}/{z}/{x}/{y}.pbf",
    summary="A vector tile of one or several layers",
    responses=TILE_RESPONSES,
    response_class=Response,
    openapi_extra=_parameters(
        ("layers", "Layer id, or several separated by commas"),
        ("z", "Zoom level 0-24"),
        ("x", "Column"),
        ("y", "Row"),
    ),
)
async def xyz_tile(request: Request, principal: PrincipalDep) -> Response:
    """Short XYZ path. With several ids (`roads,wards`) one MVT holds every layer the caller
    may read, rendered in one database round trip; the others are silently left out."""
    ctx = await tile_context(request, principal)
    z, x, y = path_int(request, "z", MAX_ZOOM), path_int(request, "x"), path_int(request, "y")
    return await serve_tile(ctx, request.path_params["layers"], z, x, y)


@router.get("/collections/{collectionId}/tiles", summary="Tilesets of a layer")
async def collection_tilesets(
    request: Request,
    catalog: FreshCatalogDep,
    principal: PrincipalDep,
    collection_id: Annotated[str, Path(alias="collectionId")],
) -> dict:
    """The layer's vector tileset in WebMercatorQuad, with its tile URL template."""
    return tj.tileset_list(catalog.get(collection_id, principal), base_url(request))


@router.get("/collections/{collectionId}/tiles/WebMercatorQuad", summary="Tileset metadata")
async def collection_tileset(
    request: Request,
    catalog: FreshCatalogDep,
    principal: PrincipalDep,
    collection_id: Annotated[str, Path(alias="collectionId")],
) -> dict:
    """Tileset metadata with the tile matrix limits of the layer's zoom range."""
    return tj.tileset(catalog.get(collection_id, principal), base_url(request))


@router.get(
    "/collections/{collectionId}/tiles/WebMercatorQuad/tilejson.json",
    summary="TileJSON 3.0.0 of a layer",
    responses=TILEJSON_ANSWER,
)
async def collection_tilejson(
    request: Request,
    tiles: TilesDep,
    catalog: FreshCatalogDep,
    principal: PrincipalDep,
    collection_id: Annotated[str, Path(alias="collectionId")],
) -> dict:
    """TileJSON whose tile URL is the OGC API path of the layer."""
    layer = catalog.get(collection_id, principal)
    url = f"{base_url(request)}/collections/{layer.id}/tiles/{TMS}/{{z}}/{{y}}/{{x}}"
    return tj.tilejson([layer], url, tiles.settings, current_version(tiles, [layer]))


@router.get(
    "/tiles/{layers}/tilejson.json",
    summary="TileJSON 3.0.0 of one or several layers",
    responses=TILEJSON_ANSWER,
)
async def xyz_tilejson(
    request: Request,
    tiles: TilesDep,
    catalog: FreshCatalogDep,
    principal: PrincipalDep,
    layers: Ids,
) -> dict:
    """TileJSON of the composite tiles of the readable layers among `layers`."""
    found = resolve_layers(catalog, principal, layers)
    ids = ",".join(la.id for la in found)
    url = f"{base_url(request)}/tiles/{ids}/{{z}}/{{x}}/{{y}}.pbf"
    return tj.tilejson(found, url, tiles.settings, current_version(tiles, found))


@router.get(
    "/styles/{layers}.json",
    summary="MapLibre style (v8) of one or several layers",
    responses=STYLE_ANSWER,
)
async def style(
    request: Request,
    tiles: TilesDep,
    catalog: FreshCatalogDep,
    principal: PrincipalDep,
    layers: Ids,
) -> dict:
    """A self-contained MapLibre style (no basemap, sprite or glyphs) from the catalog styles."""
    found = resolve_layers(catalog, principal, layers)
    ids = ",".join(la.id for la in found)
    return maplibre_style(found, f"{base_url(request)}/tiles/{ids}/tilejson.json", tiles.settings)


@router.get("/tileMatrixSets", summary="Tile matrix sets")
async def tile_matrix_sets(request: Request) -> dict:
    """The one tile matrix set served: WebMercatorQuad."""
    base = base_url(request)
    return {
        "tileMatrixSets": [
            {
                "id": TMS,
                "title": "Google Maps Compatible for the World",
                "uri": tj.WEB_MERCATOR_QUAD,
                "links": [
                    {
                        "rel": "self",
                        "type": JSON,
                        "href": f"{base}/tileMatrixSets/{TMS}",
                    }
                ],
            }
        ]
    }


@router.get("/tileMatrixSets/WebMercatorQuad", summary="The WebMercatorQuad tile matrix set")
async def web_mercator_quad(request: Request) -> dict:
    """Its definition (OGC Two Dimensional Tile Matrix Set 2.0)."""
    return tj.tile_matrix_set(base_url(request))
