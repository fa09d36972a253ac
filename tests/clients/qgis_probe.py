"""What QGIS 3.22 (Debian's python3-qgis) sees of a running ioc, as JSON on standard output.

Run with the system Python that has QGIS, not the project's venv, headless
(``QT_QPA_PLATFORM=offscreen``); ``tests/clients/test_qgis.py`` drives it. One JSON request on
standard input, e.g. ``{"check": "oapif", "base": "http://127.0.0.1:8000", "layer": "wards",
"key": null}``; checks:

- ``oapif``: opens ``layer`` with QGIS's OGC API - Features provider, with a Basic-auth
  configuration holding ``key`` (any user name) in QGIS's own auth manager when ``key`` is set;
  answers whether it is valid and how many features QGIS reads.
- ``legend``: converts a MapLibre style (``style_url``, or ``style_file``) with
  QgsMapBoxGlStyleConverter and answers, for each ``layers[i]`` (source layer, geometry, the
  attribute ``by`` and the ``values`` to try), the colour QGIS paints a feature with each value
  (the topmost enabled style that matches at ``zoom``), and the converter's warnings.
- ``render``: draws ``layer``'s vector tiles (``/tiles/{layer}/{z}/{x}/{y}.pbf``, with
  ``key`` in a Basic-auth configuration when set) with the converted style over ``extent``
  (lon/lat) on white, and counts the pixels of each colour asked for and all not white.
"""

from __future__ import annotations

import json
import os
import sys
import tempfile
import urllib.request

from qgis.core import (
    QgsApplication,
    QgsAuthMethodConfig,
    QgsCoordinateReferenceSystem,
    QgsCoordinateTransform,
    QgsExpression,
    QgsExpressionContext,
    QgsExpressionContextScope,
    QgsFeature,
    QgsField,
    QgsFields,
    QgsMapBoxGlStyleConversionContext,
    QgsMapBoxGlStyleConverter,
    QgsMapRendererSequentialJob,
    QgsMapSettings,
    QgsProject,
    QgsRectangle,
    QgsSymbolLayer,
    QgsVectorLayer,
    QgsVectorTileLayer,
    QgsWkbTypes,
)
from qgis.PyQt.QtCore import QSize, QVariant
from qgis.PyQt.QtGui import QColor

GEOMETRY = {
    "point": QgsWkbTypes.PointGeometry,
    "line": QgsWkbTypes.LineGeometry,
    "polygon": QgsWkbTypes.PolygonGeometry,
}


def start(home: str) -> QgsApplication:
    """QGIS without a GUI, its profile and auth database in ``home`` (never the user's)."""
    os.environ["QGIS_AUTH_DB_DIR_PATH"] = home
    os.environ.setdefault("XDG_RUNTIME_DIR", home)
    app = QgsApplication([], False, home)
    app.initQgis()
    return app


def basic_auth(key: str) -> str:
    """A Basic-auth configuration holding the API key as the password; its id."""
    manager = QgsApplication.authManager()
    if not manager.masterPasswordIsSet():
        manager.setMasterPassword("ioc-test-master", True)
    config = QgsAuthMethodConfig("Basic")
    config.setName("ioc")
    config.setConfig("username", "qgis")
    config.setConfig("password", key)
    if not manager.storeAuthenticationConfig(config)[0]:
        raise RuntimeError("QGIS could not store the Basic-auth configuration")
    return config.id()


def oapif(request: dict) -> dict:
    uri = f"url='{request['base']}' typename='{request['layer']}'"
    if request.get("key"):
        uri += f" authcfg='{basic_auth(request['key'])}'"
    messages: list[str] = []
    QgsApplication.messageLog().messageReceived.connect(
        lambda message, tag, level: messages.append(f"{tag}: {message}")
    )
    layer = QgsVectorLayer(uri, request["layer"], "OAPIF")
    if not layer.isValid():  # (its error() would crash here: there is no provider)
        QgsApplication.processEvents()
        return {"valid": False, "count": None, "messages": messages}
    count = sum(1 for _ in layer.getFeatures())
    return {"valid": True, "count": count, "fields": layer.fields().names()}


def convert(request: dict, url: str | None = None) -> QgsMapBoxGlStyleConverter:
    """QGIS's conversion of the MapLibre style at ``url`` (or ``style_url``, ``style_file``)."""
    if request.get("style_file"):
        with open(request["style_file"], encoding="utf-8") as file:
            style = json.load(file)
    else:
        with urllib.request.urlopen(url or request["style_url"], timeout=30) as answer:  # noqa: S310
            style = json.load(answer)
    converter = QgsMapBoxGlStyleConverter()
    if converter.convert(style, QgsMapBoxGlStyleConversionContext()) != 0:
        raise RuntimeError(converter.errorMessage())
    return converter


def painted(style, context: QgsExpressionContext) -> str:
    """The colour a style's first symbol layer paints (its data-defined colour, if any)."""
    symbol_layer = style.symbol().symbolLayer(0)
    colour = symbol_layer.color()
    prop = symbol_layer.dataDefinedProperties().property(QgsSymbolLayer.PropertyFillColor)
    if prop and prop.isActive():
        colour, _ = prop.valueAsColor(context, colour)
    if style.geometryType() == QgsWkbTypes.LineGeometry:
        stroke = symbol_layer.dataDefinedProperties().property(QgsSymbolLayer.PropertyStrokeColor)
        if stroke and stroke.isActive():
            colour, _ = stroke.valueAsColor(context, colour)
    return QColor(colour).name()


def legend(request: dict) -> dict:
    styles, warnings = [], []
    for url in request.get("style_urls") or [None]:
        converter = convert(request, url)
        styles += converter.renderer().styles()
        warnings += converter.warnings()
    answer: dict = {"warnings": warnings, "layers": {}}
    for wanted in request["layers"]:
        fields = QgsFields()
        values = wanted["values"]
        kind = (
            QVariant.Bool
            if all(isinstance(v, bool) for v in values if v is not None)
            else QVariant.Double
            if all(isinstance(v, (int, float)) for v in values if v is not None)
            else QVariant.String
        )
        fields.append(QgsField(wanted["by"], kind))
        fields.append(QgsField("count", QVariant.Int))  # absent (NULL) on a single feature
        colours = []
        for value in values:
            feature = QgsFeature(fields)
            feature.setAttribute(0, value)
            context = QgsExpressionContext()
            scope = QgsExpressionContextScope()
            scope.setFeature(feature)
            scope.setFields(fields)
            context.appendScope(scope)
            colour = None
            for style in styles:  # later styles are drawn on top
                if (
                    style.layerName() != wanted["layer"]
                    or not style.isEnabled()
                    or style.geometryType() != GEOMETRY[wanted["geometry"]]
                    or not style.isActive(wanted.get("zoom", 14))
                ):
                    continue
                if style.filterExpression() and not QgsExpression(
                    style.filterExpression()
                ).evaluate(context):
                    continue
                colour = painted(style, context)
            colours.append(colour)
        answer["layers"][wanted["layer"]] = colours
    return answer


def render(request: dict) -> dict:
    converter = convert(request)
    base, layer_id = request["base"], request["layer"]
    url = f"{base}/tiles/{layer_id}/{{z}}/{{x}}/{{y}}.pbf"
    uri = f"type=xyz&url={url}&zmin={request['zmin']}&zmax={request['zmax']}"
    if request.get("key"):
        uri += f"&authcfg={basic_auth(request['key'])}"
    layer = QgsVectorTileLayer(uri, layer_id)
    if not layer.isValid():
        return {"valid": False}
    layer.setRenderer(converter.renderer())
    QgsProject.instance().addMapLayer(layer)
    mercator = QgsCoordinateReferenceSystem("EPSG:3857")
    to_mercator = QgsCoordinateTransform(
        QgsCoordinateReferenceSystem("EPSG:4326"), mercator, QgsProject.instance()
    )
    settings = QgsMapSettings()
    settings.setDestinationCrs(mercator)
    settings.setOutputSize(QSize(request.get("size", 512), request.get("size", 512)))
    settings.setExtent(to_mercator.transformBoundingBox(QgsRectangle(*request["extent"])))
    settings.setBackgroundColor(QColor("#ffffff"))
    settings.setLayers([layer])
    job = QgsMapRendererSequentialJob(settings)
    job.start()
    job.waitForFinished()
    image = job.renderedImage()
    counts = dict.fromkeys(request.get("colours", []), 0)
    wanted = {name: QColor(name) for name in counts}
    tolerance, drawn, white = request.get("tolerance", 3), 0, QColor("#ffffff").rgb()
    for y in range(image.height()):
        for x in range(image.width()):
            drawn += image.pixel(x, y) != white
            pixel = QColor(image.pixel(x, y))
            for name, colour in wanted.items():
                if (
                    abs(pixel.red() - colour.red()) <= tolerance
                    and abs(pixel.green() - colour.green()) <= tolerance
                    and abs(pixel.blue() - colour.blue()) <= tolerance
                ):
                    counts[name] += 1
    if request.get("save"):
        image.save(request["save"])
    return {
        "valid": True,
        "pixels": counts,
        "drawn": drawn,
        "size": [image.width(), image.height()],
        "warnings": converter.warnings(),
        "errors": job.errors() and [error.message for error in job.errors()],
    }


def main() -> None:
    request = json.load(sys.stdin)
    with tempfile.TemporaryDirectory(prefix="ioc-qgis-") as home:
        os.chmod(home, 0o700)
        app = start(home)
        try:
            answer = {"oapif": oapif, "legend": legend, "render": render}[request["check"]](request)
        finally:
            QgsProject.instance().clear()
            app.exitQgis()
    json.dump(answer, sys.stdout)


if __name__ == "__main__":
    main()
