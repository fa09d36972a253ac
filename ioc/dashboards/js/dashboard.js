/* ioc dashboards: panels drawn from GET /dashboards/{id}/data, a unit map, filters both ways.
 *
 * The page's state is its URL (filters, time range, bucket, units): every click changes the URL
 * (history.replaceState) and reloads the data, so a wall screen reproduces its view after a
 * reload. Text from the data or the catalog goes into the page with textContent only (ECharts
 * draws on a canvas). The panels follow the layer's change events (EventSource on /events, same
 * origin): an event reloads the data (one request at a time, coalesced) — no timer polls.
 * The first load waits for the stream's opening 'ready', so no write falls between the two.
 *
 * The map's reports are the newest under the state the panels were computed for (every filter,
 * the unit one too: GET /dashboards/{id}/points, the panels' unit membership), and the map
 * fits the chosen unit (back to the city when it is cleared).
 */
(function () {
  'use strict';

  var cfg = null;
  var charts = {};
  var state = {};
  var data = null;
  var status = {loads: 0, errors: 0, events: 0, lastEventId: null, live: 'off', points: 0, units: 0, pending: false};
  var map = null;
  var unitLayer = null;
  var unitsLoaded = null;
  var pointLayer = null;
  var pointsAsked = 0;  // the newest points request: older answers are dropped
  var shapes = {};  // unit level -> promise of its shapes (GET /units, once per level)
  var fitted = '';  // the unit the map was fitted to ('' = the city)
  var note = null;
  var UNIT_ORDER = ['ward', 'ward2019', 'district'];  // the most precise unit chosen is fitted
  var loading = false;
  var again = false;
  var FILTERS = ['category', 'status', 'channel', 'handling_unit', 'district', 'ward', 'ward2019'];
  var RAMP = ['#ffffb2', '#fecc5c', '#fd8d3c', '#f03b20', '#bd0026'];
  var STATUS_COLOURS = {'mới': '#e31a1c', 'đang xử lý': '#fd8d3c', 'đã xử lý': '#33a02c', 'đã đóng': '#969696'};

  function $(id) { return document.getElementById(id); }
  function el(tag, cls, text) {
    var node = document.createElement(tag);
    if (cls) { node.className = cls; }
    if (text !== undefined && text !== null) { node.textContent = String(text); }
    return node;
  }
  function str(key) { return cfg.strings[key] || key; }
  function fmt(n) {
    if (n === null || n === undefined) { return '—'; }
    return Number(n).toLocaleString(cfg.lang === 'vi' ? 'vi-VN' : 'en-GB', {maximumFractionDigits: 1});
  }
  function query(extra) {
    var params = new URLSearchParams();
    Object.keys(state).forEach(function (k) { if (state[k]) { params.set(k, state[k]); } });
    Object.keys(extra || {}).forEach(function (k) { params.set(k, extra[k]); });
    return params.toString();
  }
  function getJSON(url) {
    return fetch(url, {credentials: 'same-origin', headers: {Accept: 'application/json'}}).then(function (r) {
      if (!r.ok) {
        return r.json().catch(function () { return {}; }).then(function (body) {
          throw new Error(body.description || ('HTTP ' + r.status));
        });
      }
      return r.json();
    });
  }

  // --- state and URL ---------------------------------------------------------------------

  function readState() {
    var params = new URLSearchParams(window.location.search);
    state = {};
    FILTERS.concat(['from', 'to', 'bucket', 'units']).forEach(function (k) {
      var v = params.get(k);
      if (v) { state[k] = v; }
    });
    if (!state.units) { state.units = cfg.state.units; }
    if (!state.bucket) { state.bucket = cfg.state.bucket; }
  }
  function writeURL() {
    var params = new URLSearchParams(query());
    var own = new URLSearchParams(window.location.search);
    ['lang', 'layout'].forEach(function (k) { if (own.get(k)) { params.set(k, own.get(k)); } });
    window.history.replaceState(null, '', window.location.pathname + '?' + params.toString());
    updateLinks();
  }
  function setFilter(name, value) {
    if (state[name] === value || value === null || value === undefined || value === '') { delete state[name]; }
    else { state[name] = String(value); }
    changed();
  }
  function changed() {
    writeURL();
    drawChips();
    syncControls();
    fitUnit();
    load();
  }

  // --- filter bar, controls, links -------------------------------------------------------

  function label(name) {
    return cfg.labels[cfg.fields[name] || name] || str(name);
  }
  function drawChips() {
    var box = $('dash-chips');
    box.textContent = '';
    var any = false;
    FILTERS.forEach(function (name) {
      if (!state[name]) { return; }
      any = true;
      var chip = el('button', 'dash-chip', label(name) + ': ' + unitName(name, state[name]) + ' ✕');
      chip.type = 'button';
      chip.dataset.filter = name;
      chip.addEventListener('click', function () { setFilter(name, null); });
      box.appendChild(chip);
    });
    if (!any) { box.appendChild(el('em', null, str('none'))); }
    $('dash-clear').hidden = !any;
  }
  function unitName(name, code) {
    if (['district', 'ward', 'ward2019'].indexOf(name) < 0 || !data) { return code; }
    var hit = (data.units || []).filter(function (u) { return u.code === code; })[0];
    return hit && hit.name ? hit.name + ' (' + code + ')' : code;
  }
  function dateOnly(v) { return v ? String(v).slice(0, 10) : ''; }
  function syncControls() {
    $('dash-from').value = dateOnly(state.from || cfg.state.from);
    $('dash-to').value = dateOnly(state.to);
    $('dash-bucket').value = state.bucket;
    $('dash-units').value = state.units;
  }
  function updateLinks() {
    var q = query();
    Array.prototype.forEach.call(document.querySelectorAll('[data-csv]'), function (a) {
      a.href = cfg.csv + a.dataset.csv + '.csv?' + q;
    });
    var own = new URLSearchParams(window.location.search);
    own.set('layout', cfg.layout === 'wall' ? 'desk' : 'wall');
    $('dash-layout').href = window.location.pathname + '?' + own.toString();
  }
  function setupControls() {
    $('dash-clear').addEventListener('click', function () {
      FILTERS.forEach(function (k) { delete state[k]; });
      changed();
    });
    $('dash-from').addEventListener('change', function (e) { setFilter('from', e.target.value); });
    $('dash-to').addEventListener('change', function (e) { setFilter('to', e.target.value); });
    $('dash-bucket').addEventListener('change', function (e) { state.bucket = e.target.value; changed(); });
    $('dash-units').addEventListener('change', function (e) { state.units = e.target.value; unitsLoaded = null; changed(); });
    $('dash-print').addEventListener('click', function () { window.print(); });
    Array.prototype.forEach.call(document.querySelectorAll('[data-png]'), function (a) {
      a.addEventListener('click', function (e) {
        var chart = charts[a.dataset.png];
        if (!chart) { e.preventDefault(); return; }
        a.href = chart.getDataURL({type: 'png', pixelRatio: 2, backgroundColor: cfg.layout === 'wall' ? '#131c2e' : '#ffffff'});
        a.download = cfg.id + '-' + a.dataset.png + '.png';
      });
    });
  }

  // --- panels ------------------------------------------------------------------------------

  function chart(key) {
    if (!charts[key]) {
      charts[key] = echarts.init($('chart-' + key), cfg.layout === 'wall' ? 'dark' : null, {renderer: 'canvas'});
      window.addEventListener('resize', function () { charts[key].resize(); });
    }
    return charts[key];
  }
  function textStyle() { return {fontSize: cfg.layout === 'wall' ? 18 : 12}; }
  function drawBar(rows) {
    var c = chart('category');
    c.setOption({
      backgroundColor: 'transparent', animation: false, textStyle: textStyle(),
      grid: {left: 8, right: 24, top: 8, bottom: 8, containLabel: true},
      xAxis: {type: 'value'}, yAxis: {type: 'category', inverse: true, data: rows.map(function (r) { return String(r.key); })},
      tooltip: {},
      series: [{type: 'bar', name: label('category'), data: rows.map(function (r) {
        return {value: r.n, itemStyle: {color: state.category && state.category !== String(r.key) ? '#b8c4d6' : '#3182bd'}};
      })}]
    }, true);
    c.off('click');
    c.on('click', function (p) { setFilter('category', p.name); });
  }
  function drawPie(key, rows) {
    var c = chart(key);
    c.setOption({
      backgroundColor: 'transparent', animation: false, textStyle: textStyle(), tooltip: {},
      legend: {bottom: 0, type: 'scroll', textStyle: textStyle()},
      series: [{type: 'pie', radius: ['40%', '70%'], center: ['50%', '45%'], name: label(key),
        label: {show: true, formatter: '{b}: {c}'},
        data: rows.map(function (r) {
          var item = {name: r.key === null ? '—' : String(r.key), value: r.n, selected: state[key] === String(r.key)};
          if (key === 'status' && STATUS_COLOURS[r.key]) { item.itemStyle = {color: STATUS_COLOURS[r.key]}; }
          return item;
        })}]
    }, true);
    c.off('click');
    c.on('click', function (p) { if (p.name !== '—') { setFilter(key, p.name); } });
  }
  function drawSeries(rows) {
    var c = chart('series');
    c.setOption({
      backgroundColor: 'transparent', animation: false, textStyle: textStyle(), tooltip: {trigger: 'axis'},
      grid: {left: 8, right: 16, top: 16, bottom: 8, containLabel: true},
      xAxis: {type: 'time'}, yAxis: {type: 'value'},
      series: [{type: state.bucket === 'hour' ? 'line' : 'bar', name: str('total'),
        data: rows.map(function (r) { return [r.key, r.n]; })}]
    }, true);
  }
  function drawRanking(rows) {
    var body = $('dash-ranking').tBodies[0];
    body.textContent = '';
    rows.slice(0, 30).forEach(function (r) {
      var tr = el('tr');
      tr.dataset.key = r.key === null ? '' : r.key;
      if (state.handling_unit && state.handling_unit === r.key) { tr.className = 'dash-selected'; }
      tr.appendChild(el('td', null, r.key === null ? '—' : r.key));
      [r.open, r.overdue, r.total].forEach(function (v) { tr.appendChild(el('td', null, fmt(v))); });
      tr.addEventListener('click', function () { if (r.key !== null) { setFilter('handling_unit', r.key); } });
      body.appendChild(tr);
    });
  }
  function drawKpis(k) {
    $('kpi-today').textContent = fmt(k.today);
    $('kpi-open').textContent = fmt(k.open);
    $('kpi-overdue').textContent = fmt(k.overdue);
    $('kpi-median').textContent = fmt(k.median_close_hours);
  }
  function drawAlerts(alerts) {
    var box = $('dash-alert-list');
    box.textContent = '';
    if (!alerts.length) { box.appendChild(el('em', null, str('no_alert'))); return; }
    alerts.slice(0, 20).forEach(function (a) {
      var t = cfg.thresholds[a.threshold];
      var b = el('button', 'dash-alert', (a.name || a.code) + ' · ' + t.label + ' ' + fmt(a.value));
      b.type = 'button';
      b.style.background = t.colour;
      b.dataset.code = a.code;
      b.addEventListener('click', function () { unitClick(a.code); });
      box.appendChild(b);
    });
  }

  // --- map: units coloured by count, thresholds outlined, reports as points ---------------

  function unitClick(code) {
    if (state.units === 'district' && state.district !== code) {
      // Drill-down: a district shows its 2025 wards.
      state.district = code;
      state.units = 'ward';
      unitsLoaded = null;
      changed();
      return;
    }
    setFilter(state.units, code);
  }
  function drawUnits() {
    if (!map || !data) { return; }
    var level = state.units;
    var load = unitsLoaded === level ? Promise.resolve(null) : unitShapes(level);
    load.then(function (shapes) {
      if (shapes && state.units === level) {
        if (unitLayer) { map.removeLayer(unitLayer); }
        unitsLoaded = level;
        unitLayer = L.geoJSON(shapes, {pane: 'ioc-fill', onEachFeature: function (feature, layer) {
          layer.on('click', function (e) { L.DomEvent.stopPropagation(e); unitClick(feature.properties.code); });
          layer.bindTooltip(function () {
            var u = byCode()[feature.properties.code] || {total: 0, open: 0, overdue: 0};
            var box = el('div');
            box.appendChild(el('strong', null, feature.properties.name || feature.properties.code));
            box.appendChild(el('div', null, str('total') + ': ' + fmt(u.total) + ' · ' + str('open') + ': ' + fmt(u.open) + ' · ' + str('overdue') + ': ' + fmt(u.overdue)));
            return box;
          });
        }}).addTo(map);
      }
      styleUnits();
    }).catch(function (error) { status.errors += 1; console.warn('ioc dashboard: units: ' + error.message); });
  }
  function byCode() {
    var out = {};
    (data.units || []).forEach(function (u) { out[u.code] = u; });
    return out;
  }
  function styleUnits() {
    if (!unitLayer) { return; }
    var counts = byCode();
    var values = (data.units || []).map(function (u) { return u.total; }).sort(function (a, b) { return a - b; });
    var breaks = [1, 2, 3, 4].map(function (k) { return values[Math.floor(k * values.length / 5)] || 0; });
    var selected = state[state.units];
    status.units = 0;
    unitLayer.eachLayer(function (layer) {
      var code = layer.feature.properties.code;
      var u = counts[code];
      var n = u ? u.total : 0;
      var cls = 0;
      while (cls < breaks.length && n > breaks[cls]) { cls += 1; }
      var alert = u && u.alert !== undefined ? cfg.thresholds[u.alert] : null;
      if (u) { status.units += 1; }
      layer.setStyle({fillColor: n ? RAMP[cls] : '#d0d7e2', fillOpacity: 0.65, weight: selected === code ? 4 : alert ? 3 : 0.7,
                      color: selected === code ? '#08519c' : alert ? alert.colour : '#5b6b82', opacity: 0.9});
      layer.feature.properties.n = n;
    });
  }
  function unitShapes(level) {
    if (!shapes[level]) {
      shapes[level] = getJSON(cfg.units + '?units=' + level).catch(function (error) {
        delete shapes[level];
        throw error;
      });
    }
    return shapes[level];
  }
  // The map shows the chosen unit (the most precise of ward, pre-2025 ward, district), or the
  // whole city once none is chosen.
  function fitUnit() {
    if (!map) { return; }
    var level = UNIT_ORDER.filter(function (k) { return state[k]; })[0];
    var key = level ? level + ':' + state[level] : '';
    if (key === fitted) { return; }
    fitted = key;
    if (!level) {
      map.setView(cfg.center, cfg.zoom, {animate: false});
      status.fitted = '';
      return;
    }
    unitShapes(level).then(function (fc) {
      var hit = fc.features.filter(function (ft) { return ft.properties.code === state[level]; })[0];
      if (fitted !== key) { return; }  // another unit was chosen meanwhile
      if (hit) { map.fitBounds(L.geoJSON(hit).getBounds(), {padding: [12, 12], animate: false}); }
      status.fitted = key;
    }).catch(function (error) { status.errors += 1; console.warn('ioc dashboard: fit: ' + error.message); });
  }
  function showNote(shown, total, capped) {
    if (!map) { return; }
    if (!note) {
      note = L.control({position: 'bottomleft'});
      note.onAdd = function () { var box = el('div', 'dash-map-note'); box.id = 'dash-map-note'; return box; };
      note.addTo(map);
    }
    $('dash-map-note').textContent = str(capped ? 'points_capped' : 'points')
      .replace('{shown}', fmt(shown)).replace('{total}', fmt(total));
  }
  // The newest reports under the state the panels show (data.filter: its time range resolved).
  function drawPoints() {
    if (!map || !data) { return; }
    var asked = ++pointsAsked;
    var filter = data.filter;
    var total = data.kpi.total;
    getJSON(cfg.points + '?' + new URLSearchParams(filter).toString()).then(function (doc) {
      if (asked !== pointsAsked) { return; }
      if (pointLayer) { map.removeLayer(pointLayer); }
      status.points = doc.features.length;
      status.pointIds = doc.features.map(function (ft) { return String(ft.id); });
      status.pointKeys = doc.features.map(function (ft) { return ft.properties[cfg.fields.category]; });
      status.pointsFilter = filter;
      status.pointsCapped = !!doc.truncated;
      showNote(doc.features.length, total, doc.truncated);
      pointLayer = L.geoJSON(doc, {pane: 'ioc-points', pointToLayer: function (feature, ll) {
        var s = feature.properties[cfg.fields.status];
        return L.circleMarker(ll, {radius: cfg.layout === 'wall' ? 4 : 3, weight: 0, fillOpacity: 0.8, fillColor: STATUS_COLOURS[s] || '#3182bd'});
      }}).addTo(map);
    }).catch(function (error) { status.errors += 1; console.warn('ioc dashboard: points: ' + error.message); });
  }

  // --- loading ---------------------------------------------------------------------------

  function load() {
    if (loading) { again = true; return; }
    loading = true;
    status.pending = true;
    getJSON(cfg.data + '?' + query()).then(function (doc) {
      data = doc;
      status.loads += 1;
      drawKpis(doc.kpi);
      drawBar(doc.category);
      drawPie('status', doc.status);
      drawPie('channel', doc.channel);
      drawSeries(doc.series);
      drawRanking(doc.ranking);
      drawAlerts(doc.alerts);
      drawChips();
      drawUnits();
      drawPoints();
    }).catch(function (error) {
      status.errors += 1;
      $('dash-alert-list').textContent = str('error') + ': ' + error.message;
      console.warn('ioc dashboard: ' + error.message);
    }).then(function () {
      loading = false;
      status.pending = false;
      if (again) { again = false; load(); }
    });
  }

  function showLive(s) {
    status.live = s;
    var box = $('dash-live');
    if (box) { box.dataset.state = s; }
  }
  // The stream first, then the data: a write after its 'ready' is an event, one before it is
  // in the load. Without a stream (none, or it cannot open) the data loads anyway.
  function follow() {
    if (!window.EventSource) { load(); return; }
    var first = true;
    var begin = function () { if (first) { first = false; load(); } };
    var source = new EventSource(cfg.events, {withCredentials: true});
    showLive('connecting');
    source.onopen = function () { showLive('live'); };
    source.onerror = function () { showLive('lost'); begin(); };
    source.addEventListener('ready', function (e) { status.lastEventId = e.lastEventId; begin(); });
    source.addEventListener('change', function (e) {
      status.events += 1;
      status.lastEventId = e.lastEventId;
      $('dash-live-at').textContent = new Date().toLocaleTimeString(cfg.lang === 'vi' ? 'vi-VN' : 'en-GB');
      load();
    });
  }

  function start() {
    cfg = JSON.parse($('ioc-dashboard-config').textContent);
    map = window.IocMaps && window.IocMaps.map ? window.IocMaps.map : null;
    readState();
    setupControls();
    syncControls();
    updateLinks();
    drawChips();
    fitUnit();
    follow();
  }

  window.IocDashboard = {
    status: function () { return JSON.parse(JSON.stringify(status)); },
    state: function () { return JSON.parse(JSON.stringify(state)); },
    data: function () { return data; },
    click: unitClick
  };
  document.addEventListener('DOMContentLoaded', start);
}());
