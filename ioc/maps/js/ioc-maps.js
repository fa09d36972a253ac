/* ioc map pages: draw layers from ioc's public API (GeoJSON items, vector tiles) on a Folium map.
 *
 * The page holds no data. Every request goes to the page's own origin with same-origin
 * credentials (an operator's HttpOnly session cookie, see docs/maps.md); nothing is loaded from
 * elsewhere. Text from the catalog or the data is put in the page with textContent only, never
 * as HTML (no innerHTML, no HTML strings to Leaflet), and no handler is set as an attribute: the
 * page's CSP allows no inline script (docs/security.md).
 *
 * Live layers follow the change events of the server (GET /events, Server-Sent Events, same
 * origin): an event that names features fetches only those and replaces them in place; one
 * without ids (a publish, a big batch) reloads the layer in the background and swaps it in;
 * the heat map recounts its grid cells; tile layers draw new tiles over the old ones. No timer
 * polls anything: EventSource reconnects by itself and resumes after the last event id (a fresh
 * stream's first message, 'ready', gives one before any change).
 *
 * A page starts its stream before its live layers: they load once 'ready' has come, so every
 * write is either in the load or an event after it (a write between a load and the stream's
 * opening would be lost). An event for a layer that is loading is applied after the load.
 */
(function () {
  'use strict';

  // Leaflet 1.8 removed L.DomEvent.fakeStop; Leaflet.VectorGrid 1.3 still calls it on clicks.
  if (!L.DomEvent.fakeStop) { L.DomEvent.fakeStop = function () { return true; }; }

  var PANES = {'ioc-base': 200, 'ioc-fill': 350, 'ioc-lines': 420, 'ioc-points': 450,
               'ioc-labels': 460};
  var HEAT_GRADIENT = {0.15: '#ffffb2', 0.35: '#fecc5c', 0.55: '#fd8d3c', 0.8: '#f03b20', 1.0: '#bd0026'};
  var page = {lang: 'vi', base: '', strings: {}};
  var status = {pending: 0, loaded: 0, errors: 0, tiles: 0, tileErrors: 0, features: {}, updated: null,
                patched: {}, reloads: {}, grids: 0};
  // The change-event stream: its state, the last event, and what each layer does with one.
  var live = {state: 'off', events: 0, lastId: null, lastAt: null, received: [], handlers: {},
              source: null, retry: 0, waiting: [], started: false, starting: []};
  var ID_FETCH_MAX = 20;  // more ids than this in one event: reload the layer instead
  var RECEIVED_KEPT = 200;
  var lastFeatureClick = 0;

  function str(key) { return page.strings[key] || key; }
  function el(tag, cls, text) {
    var node = document.createElement(tag);
    if (cls) { node.className = cls; }
    if (text !== undefined && text !== null) { node.textContent = text; }
    return node;
  }
  function locale() { return page.lang === 'vi' ? 'vi-VN' : 'en-GB'; }
  function formatTime(date) {
    return new Intl.DateTimeFormat(locale(), {
      timeZone: 'Asia/Ho_Chi_Minh', hour: '2-digit', minute: '2-digit', second: '2-digit',
      hour12: false}).format(date);
  }
  function formatValue(value) {
    if (typeof value === 'number') {
      return value.toLocaleString(locale(), {maximumFractionDigits: 2});
    }
    if (typeof value === 'boolean') { return value ? '✓' : '✗'; }
    return String(value);
  }
  function toNumber(value) {
    if (value === null || value === undefined || value === '') { return null; }
    var n = Number(value);
    return isFinite(n) ? n : null;
  }

  // --- requests: same origin only --------------------------------------------------------

  function sameOrigin(href) {
    // Paging links are absolute; keep only path and query so that a proxy's idea of the host
    // never sends the page elsewhere.
    if (page.base) { return href; }
    var url = new URL(href, window.location.href);
    return url.pathname + url.search;
  }
  function fetchJSON(url, cache) {
    return fetch(url, {credentials: 'same-origin', cache: cache || 'no-cache',
                      headers: {Accept: 'application/geo+json, application/json'}})
      .then(function (response) {
        if (!response.ok) { throw new Error('HTTP ' + response.status + ' ' + url); }
        return response.json();
      });
  }
  // One feature by id; null when it no longer exists (deleted since the event).
  function fetchFeature(cfg, id) {
    var url = cfg.collection + '/items/' + encodeURIComponent(id);
    return fetch(url, {credentials: 'same-origin', cache: 'no-cache',
                       headers: {Accept: 'application/geo+json'}})
      .then(function (response) {
        if (response.status === 404) { return null; }
        if (!response.ok) { throw new Error('HTTP ' + response.status + ' ' + url); }
        return response.json();
      });
  }
  // OGC API Features items, following "next" links up to `max` features.
  function fetchFeatures(url, max) {
    var features = [];
    function next(pageUrl) {
      return fetchJSON(pageUrl).then(function (fc) {
        features = features.concat(fc.features || []);
        var link = (fc.links || []).filter(function (l) { return l.rel === 'next'; })[0];
        if (link && features.length < max) { return next(sameOrigin(link.href)); }
        return {type: 'FeatureCollection', features: features};
      });
    }
    return next(url);
  }

  // --- the last-update stamp and loading state ---------------------------------------------

  function stamp() {
    status.updated = new Date();
    var node = document.getElementById('ioc-updated');
    if (node) {
      node.textContent = formatTime(status.updated);
      node.setAttribute('datetime', status.updated.toISOString());
    }
    document.body.classList.remove('ioc-failing');
  }
  // A layer's legend section is shown while the layer is on the map (layer switcher).
  function legendFollows(layer, id) {
    var show = function (visible) {
      var section = document.querySelector('.ioc-legend section[data-layer="' + CSS.escape(id) + '"]');
      if (section) { section.hidden = !visible; }
    };
    layer.on('add', function () { show(true); });
    layer.on('remove', function () { show(false); });
  }
  // Loads a layer when it is first shown, and again on change; a change during a load runs
  // one more load after it (never two at once, never a queue of them). A live layer loads
  // once the page's stream is ready; ``after`` holds what waits for the load under way.
  function track(map, layer, cfg, load) {
    legendFollows(layer, cfg.id);
    var entry = {loaded: false, busy: false, again: false, after: []};
    function run() {
      if (cfg.live && !live.started) { whenStarted(run); return; }
      if (entry.busy) { entry.again = true; return; }
      entry.busy = true;
      status.pending += 1;
      load().then(function (count) {
        entry.loaded = true;
        status.loaded += 1;
        if (count !== undefined) { status.features[cfg.id] = count; }
        stamp();
      }).catch(function (error) {
        status.errors += 1;
        document.body.classList.add('ioc-failing');
        console.warn('ioc: ' + cfg.id + ': ' + error.message);
      }).then(function () {
        entry.busy = false;
        status.pending -= 1;
        if (entry.again) { entry.again = false; run(); return; }
        entry.after.splice(0).forEach(function (task) { task(); });
      });
    }
    // ``task`` now, or once the load under way has ended (its answer may predate the event).
    function afterLoad(task) {
      if (!entry.busy && !(cfg.live && !live.started)) { task(); return; }
      if (entry.after.indexOf(task) < 0) { entry.after.push(task); }
    }
    layer.on('add', function () { if (!entry.loaded) { run(); } });
    // A change while the layer is hidden is loaded when the layer is shown again.
    function changed() {
      status.reloads[cfg.id] = (status.reloads[cfg.id] || 0) + 1;
      if (map.hasLayer(layer)) { run(); } else { entry.loaded = false; }
    }
    return {run: run, changed: changed, afterLoad: afterLoad};
  }

  // --- the change-event stream ------------------------------------------------------------

  function onLive(id, handler) {
    (live.handlers[id] = live.handlers[id] || []).push(handler);
  }
  function showLive(state) {
    live.state = state;
    var node = document.getElementById('ioc-live');
    if (!node) { return; }
    node.setAttribute('data-state', state);
    var label = document.getElementById('ioc-live-label');
    if (label) { label.textContent = str('live_' + state); }
  }
  function showLiveTime(date) {
    var node = document.getElementById('ioc-live-at');
    if (!node) { return; }
    node.textContent = formatTime(date);
    node.setAttribute('datetime', date.toISOString());
  }
  function received(message) {
    var event;
    try { event = JSON.parse(message.data); } catch (error) { return; }
    live.events += 1;
    live.lastId = message.lastEventId || String(event.id);
    live.lastAt = event.at;
    live.received.push({id: event.id, layer: event.layer, op: event.op, ids: event.ids});
    if (live.received.length > RECEIVED_KEPT) { live.received.shift(); }
    var at = new Date(event.at);
    showLiveTime(isNaN(at.getTime()) ? new Date() : at);
    (live.handlers[event.layer] || []).forEach(function (handler) {
      try { handler(event); } catch (error) { console.warn('ioc: live ' + event.layer + ': ' + error.message); }
    });
  }
  // What waits for the stream to be back (the server was out of reach): run once it opens.
  function whenBack(task) {
    if (live.waiting.indexOf(task) < 0) { live.waiting.push(task); }
  }
  // What waits for the page's first 'ready' (the live layers' first loads): run once it came,
  // or once the page has no stream to wait for.
  function whenStarted(task) {
    if (live.started) { task(); return; }
    if (live.starting.indexOf(task) < 0) { live.starting.push(task); }
  }
  function started() {
    if (live.started) { return; }
    live.started = true;
    live.starting.splice(0).forEach(function (task) { task(); });
  }
  // Every live layer loads afresh: after a loss with no event id to resume from.
  function resync() {
    Object.keys(live.handlers).forEach(function (id) {
      live.handlers[id].forEach(function (handler) { handler({layer: id, op: 'resync', ids: null}); });
    });
  }
  // One EventSource for the page's live layers. While it reconnects (by itself, sending
  // Last-Event-ID) the indicator says so. Only when the browser gives up (the server answered
  // with something else than a stream) is a new one opened, later, resuming with ?since=.
  // A page that has had no event yet has no id to resume from: it reloads its live layers
  // once the stream is back, or it would miss what was written while it was away.
  function connect(url) {
    var resume = live.lastId ? (url.indexOf('?') < 0 ? '?' : '&') + 'since=' +
      encodeURIComponent(live.lastId) : '';
    var source = new EventSource(url + resume);
    live.source = source;
    source.addEventListener('open', function () {
      var lost = live.state === 'lost';
      live.retry = 0;
      showLive('on');
      if (lost && !live.lastId) { resync(); }
      live.waiting.splice(0).forEach(function (task) { task(); });
    });
    // The id to resume from, sent before any change (the browser keeps it as Last-Event-ID).
    source.addEventListener('ready', function (message) {
      if (message.lastEventId) { live.lastId = message.lastEventId; }
      started();
    });
    source.addEventListener('change', received);
    source.addEventListener('error', function () {
      showLive('lost');
      // No stream before any 'ready': load anyway; the reconnection without an id to resume
      // from reloads the live layers (resync).
      started();
      if (source.readyState === EventSource.CLOSED && live.source === source) {
        live.retry = Math.min(live.retry + 1, 6);
        window.setTimeout(function () { connect(url); }, 1000 * Math.pow(2, live.retry));
      }
    });
  }

  // --- styles -----------------------------------------------------------------------------

  function categoryKey(value) {
    if (typeof value === 'number' && Math.floor(value) === value) { return String(value); }
    return String(value);
  }
  function colourOf(style, props) {
    if (style.by && style.categories) {
      var c = style.categories[categoryKey(props[style.by])];
      if (c) { return c; }
    }
    return style.by ? (style.fill || style.color) : null;
  }
  function pathStyle(geometry, style, props) {
    var category = colourOf(style, props);
    var opacity = style.opacity !== undefined && style.opacity !== null ? style.opacity : 0.9;
    if (geometry === 'polygon') {
      return {color: category || style.color, weight: style.width || 1, opacity: opacity,
              fill: true, fillColor: category || style.fill || style.color,
              fillOpacity: style.fill === undefined && !category ? 0 : Math.min(opacity, 0.45)};
    }
    if (geometry === 'line') {
      return {color: category || style.color, weight: style.width || 2, opacity: opacity};
    }
    var count = toNumber(props.count);
    var radius = style.radius || 5;
    if (count !== null && count > 1) { radius = Math.min(radius + 2 * Math.sqrt(count), 28); }
    return {radius: radius, color: '#ffffff', weight: 1, opacity: 0.9, fill: true,
            fillColor: category || style.fill || style.color, fillOpacity: opacity};
  }
  function paneFor(geometry) {
    return geometry === 'polygon' ? 'ioc-fill' : geometry === 'line' ? 'ioc-lines' : 'ioc-points';
  }
  function ensurePanes(map) {
    Object.keys(PANES).forEach(function (name) {
      if (!map.getPane(name)) { map.createPane(name).style.zIndex = PANES[name]; }
    });
  }

  // --- popups -----------------------------------------------------------------------------

  function popupContent(cfg, props) {
    var root = el('div', 'ioc-popup');
    var name = props.name || props.ten || props.title;
    root.appendChild(el('h3', null, name ? String(name) : cfg.title));
    if (name) { root.appendChild(el('p', 'ioc-popup-layer', cfg.title)); }
    var list = el('dl');
    if (toNumber(props.count) !== null && (cfg.attributes || []).every(function (a) { return a.name !== 'count'; })) {
      list.appendChild(el('dt', null, str('features')));
      list.appendChild(el('dd', null, formatValue(Number(props.count))));
    }
    (cfg.attributes || []).forEach(function (a) {
      var value = props[a.name];
      if (value === undefined || value === null || value === '' || a.name === 'name') { return; }
      list.appendChild(el('dt', null, a.label));
      list.appendChild(el('dd', null, formatValue(value) + (a.unit ? ' ' + a.unit : '')));
    });
    root.appendChild(list);
    return root;
  }
  function markFeatureClick() { lastFeatureClick = Date.now(); }

  // --- layer factories (called by the Folium elements) -------------------------------------

  var IocMaps = {};

  // The feature's new geometry and properties on its existing Leaflet layer (no remove and
  // add: no flicker, an open popup stays open); false when the shapes do not match.
  function updateInPlace(geojson, item, feature) {
    var g = feature.geometry;
    if (!g) { return false; }
    if (item instanceof L.CircleMarker && g.type === 'Point') {
      item.setLatLng(L.GeoJSON.coordsToLatLng(g.coordinates));
    } else if (item instanceof L.Polygon && (g.type === 'Polygon' || g.type === 'MultiPolygon')) {
      item.setLatLngs(L.GeoJSON.coordsToLatLngs(g.coordinates, g.type === 'Polygon' ? 1 : 2));
    } else if (item instanceof L.Polyline && !(item instanceof L.Polygon) &&
               (g.type === 'LineString' || g.type === 'MultiLineString')) {
      item.setLatLngs(L.GeoJSON.coordsToLatLngs(g.coordinates, g.type === 'LineString' ? 0 : 1));
    } else {
      return false;
    }
    item.feature = feature;
    geojson.resetStyle(item);
    if (item.isPopupOpen()) { item.getPopup().update(); }
    return true;
  }

  // Live GeoJSON: fetch the features an event names (a few at a time, applied together), or
  // reload the whole layer when the event names none, too many, or the view filters the layer.
  function followFeatures(cfg, geojson, byId, loader) {
    var pending = {};
    var scheduled = false;
    function remove(id) {
      if (byId[id]) { geojson.removeLayer(byId[id]); delete byId[id]; }
    }
    function apply(features) {
      features.forEach(function (pair) {
        var id = pair[0], feature = pair[1];
        if (feature === null) { remove(id); return; }
        var old = byId[id];
        if (old && updateInPlace(geojson, old, feature)) { return; }
        remove(id);
        geojson.addData(feature);
      });
      status.patched[cfg.id] = (status.patched[cfg.id] || 0) + features.length;
      status.features[cfg.id] = Object.keys(byId).length;
      stamp();
    }
    function schedule() {
      if (!scheduled) { scheduled = true; Promise.resolve().then(flush); }
    }
    function flush() {
      scheduled = false;
      var ids = Object.keys(pending);
      pending = {};
      if (!ids.length) { return; }
      Promise.all(ids.map(function (id) {
        return fetchFeature(cfg, id).then(function (f) { return [id, f]; });
      })).then(apply).catch(function (error) {
        console.warn('ioc: ' + cfg.id + ': ' + error.message);
        if (error instanceof TypeError) {
          // No answer at all (fetch's network failure): the server went away between the
          // event and the fetch. A reload could not load either, and the stream resumes after
          // this event: fetch the same features again once it is back (or with the next event).
          ids.forEach(function (id) { pending[id] = true; });
          whenBack(schedule);
          return;
        }
        loader.changed();
      });
    }
    onLive(cfg.id, function (event) {
      var ids = event.ids || [];
      if (!event.ids || cfg.filtered || ids.length > ID_FETCH_MAX) { loader.changed(); return; }
      if (event.op === 'item.delete') {
        loader.afterLoad(function () {
          ids.forEach(remove);
          status.features[cfg.id] = Object.keys(byId).length;
        });
        return;
      }
      ids.forEach(function (id) { pending[String(id)] = true; });
      if (Object.keys(pending).length > ID_FETCH_MAX) { pending = {}; loader.changed(); return; }
      // Events of one write arrive together: fetch their features in one go, after the
      // layer's load under way (whose answer may be older than the event).
      loader.afterLoad(schedule);
    });
  }

  IocMaps.features = function (map, cfg) {
    ensurePanes(map);
    var pane = paneFor(cfg.geometry);
    var byId = {};
    var layer = L.geoJSON(null, {
      pane: pane,
      style: function (f) { return pathStyle(cfg.geometry, cfg.style, f.properties || {}); },
      pointToLayer: function (f, latlng) {
        var options = pathStyle('point', cfg.style, f.properties || {});
        options.pane = pane;
        return L.circleMarker(latlng, options);
      },
      onEachFeature: function (f, item) {
        if (f.id !== undefined && f.id !== null) {
          byId[String(f.id)] = item;
          // For people and tests: which feature a shape on the map is.
          item.on('add', function () {
            var node = item.getElement && item.getElement();
            if (node) {
              node.setAttribute('data-layer', cfg.id);
              node.setAttribute('data-feature', String(item.feature.id));
            }
          });
        }
        item.on('click', markFeatureClick);
        item.bindPopup(function () { return popupContent(cfg, item.feature.properties || {}); });
      }
    });
    var loader = track(map, layer, cfg, function () {
      return fetchFeatures(cfg.url, cfg.max || 10000).then(function (fc) {
        // Swapped in one go once the whole layer is here: the old features stay until then.
        layer.clearLayers();
        Object.keys(byId).forEach(function (id) { delete byId[id]; });
        layer.addData(fc);
        return fc.features.length;
      });
    });
    if (cfg.live) { followFeatures(cfg, layer, byId, loader); }
    return layer;
  };

  function vectorGrid(map, cfg) {
    var sublayers = cfg.layers || [{id: cfg.id, geometry: cfg.geometry, style: cfg.style}];
    var styles = {};
    sublayers.forEach(function (sub) {
      styles[sub.id] = function (props) { return pathStyle(sub.geometry, sub.style, props || {}); };
    });
    var grid = L.vectorGrid.protobuf(cfg.url, {
      vectorTileLayerStyles: styles,
      rendererFactory: L.canvas.tile,
      interactive: !!cfg.interactive,
      pane: cfg.pane || paneFor(cfg.geometry),
      maxNativeZoom: cfg.maxZoom !== undefined ? Math.min(cfg.maxZoom, 22) : 22,
      maxZoom: 22,
      attribution: cfg.attribution || '',
      // Live tiles are revalidated (an unchanged tile costs a 304), the others cached.
      fetchOptions: {credentials: 'same-origin', cache: cfg.live ? 'no-cache' : 'default'}
    });
    grid.on('tileload', function () { status.tiles += 1; });
    grid.on('tileerror', function () { status.tileErrors += 1; });
    grid.on('load', stamp);
    if (cfg.interactive) {
      grid.on('click', function (e) {
        markFeatureClick();
        L.popup().setLatLng(e.latlng).setContent(popupContent(cfg, e.layer.properties || {}))
          .openOn(map);
      });
    }
    return grid;
  }

  IocMaps.tiles = function (map, cfg) {
    ensurePanes(map);
    if (!cfg.live) {
      var grid = vectorGrid(map, cfg);
      legendFollows(grid, cfg.id);
      return grid;
    }
    // A live tile layer draws a fresh set of tiles over the shown one and drops the old set
    // once the new one has loaded: a redraw in place would blank the map meanwhile. Its first
    // tiles are asked for once the page's stream is ready.
    var group = L.layerGroup();
    var swapping = false, again = false;
    legendFollows(group, cfg.id);
    whenStarted(function () { group.addLayer(vectorGrid(map, cfg)); });
    function swap() {
      // Hidden (shown again later, its tiles load afresh), or its first tiles still to come.
      if (!map.hasLayer(group) || !group.getLayers().length) { return; }
      if (swapping) { again = true; return; }
      swapping = true;
      var old = group.getLayers();
      var next = vectorGrid(map, cfg);
      var done = false;
      function finish() {
        if (done) { return; }
        done = true;
        old.forEach(function (grid) { group.removeLayer(grid); });
        swapping = false;
        if (again) { again = false; swap(); }
      }
      next.once('load', finish);
      // No tile to load at this zoom fires no 'load': do not keep both sets for ever.
      window.setTimeout(finish, 15000);
      group.addLayer(next);
    }
    onLive(cfg.id, function (event) {
      status.reloads[cfg.id] = (status.reloads[cfg.id] || 0) + 1;
      // Tile URLs carry the layer's tile version (docs/scaling.md): its event's id is the new
      // one; without an id (a resync) tiles are asked for unversioned, revalidated by ETag.
      cfg.url = event.id ? cfg.url.replace(/([?&]v=)\d+/, '$1' + event.id)
        : cfg.url.replace(/[?&]v=[^&]*/, '');
      swap();
    });
    return group;
  };

  // Bounds as a bbox parameter (lon/lat, inside Web Mercator's latitudes).
  function bboxParam(b) {
    var clamp = function (v, lo, hi) { return Math.max(lo, Math.min(hi, v)).toFixed(5); };
    return [clamp(b.getWest(), -180, 180), clamp(b.getSouth(), -85, 85),
            clamp(b.getEast(), -180, 180), clamp(b.getNorth(), -85, 85)].join(',');
  }

  // The heat map of a layer from its grid aggregate (GET /collections/{id}/grid): every
  // feature counted by the server in cells of 16 pixels over the view, never a sample.
  function heatUrl(map, cfg) {
    var level = Math.max(0, Math.min(24, Math.round(map.getZoom()) + 4));
    var bbox = bboxParam(map.getBounds().pad(0.15));  // the blur of points just outside reaches the edge
    return cfg.gridUrl + (cfg.gridUrl.indexOf('?') < 0 ? '?' : '&') + 'level=' + level +
      '&bbox=' + bbox;
  }
  function percentile(values, p) {
    if (!values.length) { return 0; }
    var sorted = values.slice().sort(function (a, b) { return a - b; });
    return sorted[Math.min(sorted.length - 1, Math.floor(p * sorted.length))];
  }

  IocMaps.heatmap = function (map, cfg) {
    ensurePanes(map);
    // maxZoom 0: the server's cells already fit the zoom; Leaflet.heat must not fade them.
    var layer = L.heatLayer([], {radius: 14, blur: 18, maxZoom: 0, max: 1, minOpacity: 0.05,
                                 gradient: HEAT_GRADIENT});
    var loader = track(map, layer, cfg, function () {
      return fetchJSON(heatUrl(map, cfg)).then(function (doc) {
        var col = {};
        doc.columns.forEach(function (name, i) { col[name] = i; });
        var value = col.sum !== undefined ? col.sum : col.count;
        var points = doc.cells.map(function (c) { return [c[col.lat], c[col.lon], c[value] || 0]; });
        // The densest cells saturate, not the single hottest one (it would wash out the rest).
        var max = percentile(points.map(function (p) { return p[2]; }), 0.97);
        layer.setOptions({max: Math.max(1, max)});
        layer.setLatLngs(points);
        status.grids += 1;
        return doc.total;
      });
    });
    map.on('moveend', function () { if (map.hasLayer(layer)) { loader.run(); } });
    if (cfg.live) { onLive(cfg.id, loader.changed); }
    return layer;
  };

  function quantileBreaks(values, classes) {
    var sorted = values.slice().sort(function (a, b) { return a - b; });
    var breaks = [];
    for (var i = 1; i < classes; i += 1) {
      var b = sorted[Math.min(sorted.length - 1, Math.floor(i * sorted.length / classes))];
      if (breaks.indexOf(b) < 0 && b > sorted[0]) { breaks.push(b); }
    }
    return breaks;
  }
  function classOf(value, breaks) {
    var i = 0;
    while (i < breaks.length && value >= breaks[i]) { i += 1; }
    return i;
  }
  function drawChoroplethLegend(cfg, breaks, colors) {
    var list = document.querySelector('[data-choropleth="' + CSS.escape(cfg.id) + '"]');
    if (!list) { return; }
    while (list.firstChild) { list.removeChild(list.firstChild); }
    if (cfg.legendTitle) {
      list.appendChild(el('li', 'ioc-classes-title',
                          cfg.legendTitle + (cfg.unit ? ' (' + cfg.unit + ')' : '')));
    }
    for (var i = 0; i <= breaks.length; i += 1) {
      var label = i === 0 ? '< ' + formatValue(breaks[0])
        : i === breaks.length ? '≥ ' + formatValue(breaks[i - 1])
          : formatValue(breaks[i - 1]) + ' – ' + formatValue(breaks[i]);
      if (breaks.length === 0) { label = str('features'); }
      var item = el('li');
      var swatch = el('i', 'ioc-swatch ioc-swatch-polygon');
      swatch.style.setProperty('--swatch', colors[i]);
      item.appendChild(swatch);
      item.appendChild(document.createTextNode(label));
      list.appendChild(item);
    }
  }

  IocMaps.choropleth = function (map, cfg) {
    ensurePanes(map);
    var colors = cfg.colors;
    var breaks = cfg.breaks || [];
    var layer = L.geoJSON(null, {
      pane: 'ioc-fill',
      style: function (f) {
        var v = toNumber((f.properties || {})[cfg.property]);
        return {color: cfg.outline || '#1b1f24', weight: 0.7, opacity: 0.7, fill: true, fillOpacity: 0.6,
                fillColor: v === null ? '#8c8c8c' : colors[Math.min(classOf(v, breaks), colors.length - 1)]};
      },
      onEachFeature: function (f, item) {
        item.on('click', markFeatureClick);
        item.bindPopup(function () { return popupContent(cfg, f.properties || {}); });
      }
    });
    var loader = track(map, layer, cfg, function () {
      return fetchFeatures(cfg.url, cfg.max || 10000).then(function (fc) {
        if (!cfg.breaks) {
          var values = fc.features.map(function (f) { return toNumber((f.properties || {})[cfg.property]); })
            .filter(function (v) { return v !== null; });
          breaks = values.length ? quantileBreaks(values, colors.length) : [];
          colors = cfg.colors.slice(cfg.colors.length - breaks.length - 1);
        }
        layer.clearLayers();
        layer.addData(fc);
        drawChoroplethLegend(cfg, breaks, colors);
        return fc.features.length;
      });
    });
    if (cfg.live) { onLive(cfg.id, loader.changed); }
    return layer;
  };

  // --- labels: place and street names ------------------------------------------------------
  //
  // Names come from ioc's own layers through GET /collections/{id}/labels (label points with
  // the zoom from which each fits, largest first). The page places them in the order of the
  // view's sources (districts, wards, streets), each source largest first, and drops a label
  // whose box meets one already placed, or the same name nearer than LABEL_REPEAT_PX: no
  // pile-ups at any zoom. Labels are DOM elements with textContent (diacritics are the
  // browser's text shaping, the system's fonts: nothing is fetched), in their own pane that
  // never takes a click. Widths are measured on a canvas in the labels' own font, so placing
  // costs no layout; the DOM gets one fragment per redraw.

  var LABEL_MAX = 250;         // elements on screen at most (a 4K wall shows far fewer)
  var LABEL_REPEAT_PX = 320;   // the same name not nearer than this
  var LABEL_GAP_PX = 3;        // free space around each label box
  var LABEL_FETCH = 1000;      // labels asked per source and view

  function labelBox(x, y, w, h, angle) {
    var a = angle * Math.PI / 180;
    var bw = Math.abs(w * Math.cos(a)) + Math.abs(h * Math.sin(a));
    var bh = Math.abs(w * Math.sin(a)) + Math.abs(h * Math.cos(a));
    return [x - bw / 2 - LABEL_GAP_PX, y - bh / 2 - LABEL_GAP_PX,
            x + bw / 2 + LABEL_GAP_PX, y + bh / 2 + LABEL_GAP_PX];
  }
  function boxesMeet(a, b) { return a[0] < b[2] && b[0] < a[2] && a[1] < b[3] && b[1] < a[3]; }

  var LabelLayer = L.Layer.extend({
    initialize: function (cfg) {
      this._cfg = cfg;
      this._sources = (cfg.sources || []).map(function (s) {
        return {cfg: s, key: null, wanted: null, rows: [], bounds: null};
      });
      this._fonts = {};
      this._sizes = {};
      status.labels = {sources: {}, candidates: 0, shown: 0, ms: 0, maxMs: 0, draws: 0,
                       fetches: 0, pending: 0, errors: 0};
    },
    onAdd: function (map) {
      ensurePanes(map);
      this._box = el('div', 'ioc-labels' + (this._cfg.theme ? ' ioc-labels-' + this._cfg.theme : ''));
      map.getPane('ioc-labels').appendChild(this._box);
      map.on('moveend', this._update, this);
      map.on('zoomstart', this._hide, this);
      this._update();
    },
    onRemove: function (map) {
      map.off('moveend', this._update, this);
      map.off('zoomstart', this._hide, this);
      this._box.parentNode.removeChild(this._box);
      this._box = null;
    },
    // Positions are layer points: they pan with the map but not through a zoom animation.
    _hide: function () { if (this._box) { this._box.style.display = 'none'; } },
    _update: function () {
      var map = this._map, self = this;
      if (!map) { return; }
      var zoom = Math.round(map.getZoom() * 10) / 10;
      var view = map.getBounds();
      this._sources.forEach(function (src) {
        if (zoom < src.cfg.minZoom || zoom > src.cfg.maxZoom) { return; }
        if (src.bounds && src.key === zoom && src.bounds.contains(view)) { return; }
        if (src.wanted === zoom && src.wantedBounds.contains(view)) { return; }  // on its way
        var b = view.pad(0.5);
        var url = src.cfg.url + '&zoom=' + zoom + '&bbox=' + bboxParam(b) + '&limit=' + LABEL_FETCH;
        src.wanted = zoom;
        src.wantedBounds = b;
        status.labels.fetches += 1;
        status.labels.pending += 1;
        fetchJSON(url, 'default').then(function (doc) {
          status.labels.pending -= 1;
          if (src.wanted !== zoom || src.wantedBounds !== b) { return; }  // the view moved on
          src.key = zoom;
          src.bounds = b;
          src.wanted = null;
          var col = {};
          doc.columns.forEach(function (name, i) { col[name] = i; });
          src.rows = doc.labels.map(function (r) {
            return {text: r[col.text], lat: r[col.lat], lon: r[col.lon], minzoom: r[col.minzoom],
                    angle: r[col.angle] || 0};
          });
          status.labels.sources[src.cfg.id] = src.rows.length;
          self._draw();
        }).catch(function (error) {
          status.labels.pending -= 1;
          src.wanted = null;
          status.labels.errors += 1;
          console.warn('ioc: labels ' + src.cfg.id + ': ' + error.message);
        });
      });
      this._draw();
    },
    // The label fonts, read once from probe elements (the stylesheet decides): all kinds in
    // one go, for one style and layout pass of the page rather than one per kind.
    _font: function (kind) {
      if (this._fonts[kind]) { return this._fonts[kind]; }
      var box = this._box, fonts = this._fonts;
      var kinds = this._sources.map(function (s) { return s.cfg.kind; }).concat([kind]);
      var probes = kinds.map(function (k) {
        var probe = el('span', 'ioc-label ioc-label-' + k, 'Đ');
        probe.style.visibility = 'hidden';
        box.appendChild(probe);
        return probe;
      });
      probes.forEach(function (probe, i) {
        var cs = window.getComputedStyle(probe);
        fonts[kinds[i]] = {css: [cs.fontStyle, cs.fontWeight, cs.fontSize, cs.fontFamily].join(' '),
                           height: probe.getBoundingClientRect().height,
                           pad: parseFloat(cs.paddingLeft) + parseFloat(cs.paddingRight)};
      });
      probes.forEach(function (probe) { box.removeChild(probe); });
      return fonts[kind];
    },
    // The boxes of what floats over the map (controls, legend, hint): no name goes under them.
    _obstacles: function () {
      var origin = this._map.getContainer().getBoundingClientRect();
      var nodes = document.querySelectorAll('.leaflet-control, .ioc-legend, .ioc-hint, .ioc-embed .ioc-live');
      return Array.prototype.map.call(nodes, function (node) {
        var r = node.getBoundingClientRect();
        return [r.left - origin.left, r.top - origin.top, r.right - origin.left, r.bottom - origin.top];
      }).filter(function (b) { return b[2] > b[0] && b[3] > b[1]; });
    },
    // A label's size in CSS pixels (kept: a name is measured once per page).
    _measure: function (kind, text) {
      var key = kind + '\u0000' + text;
      if (this._sizes[key]) { return this._sizes[key]; }
      var font = this._font(kind);
      var ctx = this._ctx || (this._ctx = document.createElement('canvas').getContext('2d'));
      if (this._ctxFont !== font.css) { ctx.font = this._ctxFont = font.css; }
      var size = {w: Math.ceil(ctx.measureText(text).width + font.pad) + 1, h: Math.ceil(font.height)};
      this._sizes[key] = size;
      return size;
    },
    _draw: function () {
      var map = this._map;
      if (!map || !this._box) { return; }
      var started = performance.now();
      this._box.style.display = '';  // (fonts are measured in it)
      var zoom = map.getZoom();
      var size = map.getSize();
      var placed = this._obstacles(), seen = {}, candidates = 0, self = this;
      var reserved = placed.length;
      var fragment = document.createDocumentFragment();
      this._sources.forEach(function (src) {
        if (zoom < src.cfg.minZoom || zoom > src.cfg.maxZoom || src.key === null) { return; }
        for (var i = 0; i < src.rows.length && placed.length - reserved < LABEL_MAX; i += 1) {
          var row = src.rows[i];
          if (row.minzoom > zoom) { continue; }
          var p = map.latLngToContainerPoint([row.lat, row.lon]);
          if (p.x < 0 || p.y < 0 || p.x > size.x || p.y > size.y) { continue; }
          candidates += 1;
          var m = self._measure(src.cfg.kind, row.text);
          var box = labelBox(p.x, p.y, m.w, m.h, row.angle);
          if (box[0] < 0 || box[1] < 0 || box[2] > size.x || box[3] > size.y) { continue; }
          if (placed.some(function (b) { return boxesMeet(b, box); })) { continue; }
          var twins = seen[row.text] || (seen[row.text] = []);
          if (twins.some(function (q) { return q.distanceTo(p) < LABEL_REPEAT_PX; })) { continue; }
          twins.push(p);
          placed.push(box);
          var at = map.containerPointToLayerPoint(p);
          var node = el('span', 'ioc-label ioc-label-' + src.cfg.kind, row.text);
          node.setAttribute('data-layer', src.cfg.id);
          node.style.transform = 'translate(' + at.x.toFixed(1) + 'px,' + at.y.toFixed(1) +
            'px) translate(-50%,-50%)' + (row.angle ? ' rotate(' + row.angle + 'deg)' : '');
          fragment.appendChild(node);
        }
      });
      while (this._box.firstChild) { this._box.removeChild(this._box.firstChild); }
      this._box.appendChild(fragment);
      var ms = performance.now() - started;
      var s = status.labels;
      s.candidates = candidates;
      s.shown = placed.length - reserved;
      s.ms = Math.round(ms * 10) / 10;
      s.maxMs = Math.max(s.maxMs, s.ms);
      s.draws += 1;
    }
  });

  // Place and street names over a map (the view's `labels`; dashboards call it too):
  // cfg = {sources: [{id, kind: district|ward|street|place, url, minZoom, maxZoom}], theme?}.
  IocMaps.labels = function (map, cfg) {
    ensurePanes(map);
    return new LabelLayer(cfg);
  };

  // --- page behaviour: clock, search, "what is here" ---------------------------------------

  function startClock() {
    var node = document.getElementById('ioc-clock');
    if (!node) { return; }
    var tick = function () {
      var now = new Date();
      node.textContent = formatTime(now);
      node.setAttribute('datetime', now.toISOString());
    };
    tick();
    window.setInterval(tick, 1000);
  }

  function resultPoint(item) {
    var g = item.geometry || (item.location && item.location.type ? item.location : null);
    if (g && g.type === 'Point') { return [g.coordinates[1], g.coordinates[0]]; }
    if (item.lat !== undefined && item.lon !== undefined) { return [Number(item.lat), Number(item.lon)]; }
    if (Array.isArray(item.bbox) && item.bbox.length === 4) {
      return [(item.bbox[1] + item.bbox[3]) / 2, (item.bbox[0] + item.bbox[2]) / 2];
    }
    return null;
  }
  function resultLabel(item) {
    var p = item.properties || item;
    return p.label || p.full_address || p.address || p.name || p.code || p.digital_address || '';
  }

  function setupSearch(map) {
    var form = document.getElementById('ioc-search');
    if (!form) { return; }
    var input = document.getElementById('ioc-search-q');
    var list = document.getElementById('ioc-search-results');
    var marker = null;
    form.addEventListener('submit', function (event) {
      event.preventDefault();
      var q = input.value.trim();
      if (q.length < 2) { return; }
      while (list.firstChild) { list.removeChild(list.firstChild); }
      list.hidden = false;
      list.appendChild(el('li', 'ioc-muted', str('loading')));
      var centre = map.getCenter();
      var url = page.base + '/addresses?limit=8&near=' + centre.lng.toFixed(5) + ',' +
        centre.lat.toFixed(5) + '&q=' + encodeURIComponent(q);
      fetchJSON(url).then(function (doc) {
        var items = doc.features || doc.results || doc.addresses || (Array.isArray(doc) ? doc : []);
        while (list.firstChild) { list.removeChild(list.firstChild); }
        if (!items.length) { list.appendChild(el('li', 'ioc-muted', str('nothing'))); return; }
        items.forEach(function (item) {
          var point = resultPoint(item);
          var li = el('li');
          var button = el('button', null, resultLabel(item));
          button.type = 'button';
          button.addEventListener('click', function () {
            list.hidden = true;
            if (!point) { return; }
            if (marker) { map.removeLayer(marker); }
            marker = L.circleMarker(point, {radius: 9, color: '#ffffff', weight: 3, fillColor: '#d7191c',
                                            fillOpacity: 1, pane: 'ioc-points'})
              .addTo(map).bindPopup(el('strong', null, resultLabel(item))).openPopup();
            map.setView(point, Math.max(map.getZoom(), 17));
          });
          li.appendChild(button);
          list.appendChild(li);
        });
      }).catch(function (error) {
        while (list.firstChild) { list.removeChild(list.firstChild); }
        list.appendChild(el('li', 'ioc-muted', str('error')));
        console.warn('ioc: search: ' + error.message);
      });
    });
  }

  function featureLabel(item) {
    if (!item) { return ''; }
    var p = item.properties || item;
    return p.full_name || p.name || p.land_use_name || p.plan_name || p.address || p.label ||
      p.risk_level || p.level || p.zone_code || p.code || '';
  }
  function distance(item) {
    return item && item.distance_m !== undefined ? ' (' + formatValue(Math.round(item.distance_m)) + ' m)' : '';
  }
  // The answer of GET /whats-here: address, ward, flood, planning, nearest services, reports.
  function whatsHereContent(doc) {
    var root = el('div', 'ioc-popup ioc-whats-here');
    root.appendChild(el('h3', null, str('whats_here')));
    if (doc.address) { root.appendChild(el('p', 'ioc-address', resultLabel(doc.address))); }
    if (doc.ward) { root.appendChild(el('p', 'ioc-ward', featureLabel(doc.ward))); }
    var list = el('dl');
    function row(label, value) {
      if (value === '' || value === null || value === undefined) { return; }
      list.appendChild(el('dt', null, label));
      list.appendChild(el('dd', null, value));
    }
    var flood = doc.flood || {};
    (flood.risk_zones || []).forEach(function (z) { row(str('flood_risk'), featureLabel(z)); });
    if (flood.points) { row(str('flood_points_near'), formatValue(flood.points.count || 0)); }
    var planning = doc.planning || {};
    (planning.zoning || []).concat(planning.land_use || []).slice(0, 3).forEach(function (z) {
      row(str('planning'), featureLabel(z));
    });
    var nearest = doc.nearest || {};
    Object.keys(nearest).forEach(function (key) {
      if (nearest[key]) { row(str('nearest_' + key), featureLabel(nearest[key]) + distance(nearest[key])); }
    });
    if (doc.reports && doc.reports.recent) { row(str('reports_near'), formatValue(doc.reports.recent.count || 0)); }
    if (list.firstChild) { root.appendChild(list); }
    if (!doc.address && !doc.ward && !list.firstChild) { root.appendChild(el('p', 'ioc-muted', str('nothing'))); }
    return root;
  }

  function setupWhatsHere(map) {
    map.on('click', function (e) {
      if (Date.now() - lastFeatureClick < 400) { return; }
      var ll = e.latlng.wrap();
      var popup = L.popup().setLatLng(e.latlng).setContent(el('p', 'ioc-muted', str('loading'))).openOn(map);
      var url = page.base + '/whats-here?lon=' + ll.lng.toFixed(6) + '&lat=' + ll.lat.toFixed(6);
      fetchJSON(url).then(function (doc) { popup.setContent(whatsHereContent(doc)); })
        .catch(function (error) {
          popup.setContent(el('p', 'ioc-muted', str('error')));
          console.warn('ioc: whats-here: ' + error.message);
        });
    });
  }

  IocMaps.page = function (map, cfg) {
    page.lang = cfg.lang || 'vi';
    page.base = cfg.base || '';
    page.strings = cfg.strings || {};
    ensurePanes(map);
    if (cfg.background) { map.getContainer().style.background = cfg.background; }
    map.attributionControl.setPrefix(false);
    if (cfg.fitBounds) {
      map.fitBounds(cfg.fitBounds, {padding: [24, 24], maxZoom: 16, animate: false});
      if (cfg.fitMinZoom && map.getZoom() < cfg.fitMinZoom) { map.setZoom(cfg.fitMinZoom, {animate: false}); }
    }
    startClock();
    if (cfg.search) { setupSearch(map); }
    if (cfg.whatsHere) { setupWhatsHere(map); }
    if (cfg.live && window.EventSource) {
      showLive('connecting');
      // After this script has run: every layer has registered what it does with an event.
      window.setTimeout(function () { connect(cfg.live); }, 0);
    } else {
      started();
    }
    var legend = document.getElementById('ioc-legend');
    if (legend && (cfg.embed || window.matchMedia('(max-width: 640px)').matches)) { legend.open = false; }
    IocMaps.map = map;
  };

  // For people and tests: what the page has loaded so far.
  IocMaps.status = function () {
    var copy = JSON.parse(JSON.stringify(status));
    copy.live = {state: live.state, events: live.events, lastId: live.lastId, lastAt: live.lastAt,
                 received: live.received.slice()};
    return copy;
  };

  window.IocMaps = IocMaps;
}());
