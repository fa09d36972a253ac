/* ioc's HTML pages: the front page's address search, the catalog's filters and copy buttons,
 * and the Leaflet map beside the collection, items and feature tables.
 *
 * Same rules as the map pages (docs/security.md): every request goes to the page's own origin;
 * text from the catalog or the data is put in the page with textContent only (never innerHTML,
 * never an HTML string to Leaflet); no inline script or handler attribute (the CSP allows only
 * this file and Leaflet). Features come from a JSON block of the page (type application/json,
 * escaped by the template engine, never executed) or from the items URL the page names.
 */
(function () {
  'use strict';

  var state = {features: 0, selected: null, ready: false, errors: 0};
  var STYLE = {color: '#0b3d91', weight: 1.5, fillColor: '#4a7fd4', fillOpacity: 0.25, radius: 6};
  var SELECTED = {color: '#d4380d', weight: 3, fillColor: '#ffa940', fillOpacity: 0.55};

  function el(tag, cls, text) {
    var node = document.createElement(tag);
    if (cls) { node.className = cls; }
    if (text !== undefined && text !== null) { node.textContent = text; }
    return node;
  }
  function clear(node) { while (node.firstChild) { node.removeChild(node.firstChild); } }
  function fetchJSON(url) {
    return fetch(url, {credentials: 'same-origin', headers: {Accept: 'application/geo+json, application/json'}})
      .then(function (response) {
        if (!response.ok) { throw new Error('HTTP ' + response.status); }
        return response.json();
      });
  }

  // --- front page: address search ---------------------------------------------------------

  function addressSearch() {
    var form = document.getElementById('ioc-address-search');
    if (!form) { return; }
    var base = form.getAttribute('data-base') || '';
    var input = document.getElementById('ioc-address-q');
    var list = document.getElementById('ioc-address-results');
    form.addEventListener('submit', function (event) {
      event.preventDefault();
      var q = input.value.trim();
      if (q.length < 2) { return; }
      clear(list);
      list.hidden = false;
      list.appendChild(el('li', 'ioc-meta', 'Đang tìm… / Searching…'));
      fetchJSON(base + '/addresses?limit=6&q=' + encodeURIComponent(q)).then(function (doc) {
        clear(list);
        var found = doc.features || [];
        if (!found.length) { list.appendChild(el('li', 'ioc-meta', 'Không tìm thấy / Nothing found')); return; }
        found.forEach(function (item) {
          var p = item.properties || {};
          var li = el('li');
          // The address shown on the items page of the digital-address layer, on its map.
          var link = el('a', null, p.address || p.code);
          var filter = "code='" + String(p.code).replace(/'/g, "''") + "'";
          link.href = base + '/collections/digital_addresses/items?f=html&filter=' + encodeURIComponent(filter);
          li.appendChild(link);
          li.appendChild(el('span', 'ioc-meta', ' · ' + p.code));
          list.appendChild(li);
        });
      }).catch(function () {
        clear(list);
        list.appendChild(el('li', 'ioc-meta', 'Không tìm được lúc này / Search failed'));
      });
    });
  }

  // --- catalog: filters submit on change, copy buttons --------------------------------------

  function catalogForm() {
    document.querySelectorAll('select[data-autosubmit]').forEach(function (select) {
      select.addEventListener('change', function () { select.form.submit(); });
    });
    document.querySelectorAll('button[data-copy]').forEach(function (button) {
      button.addEventListener('click', function () {
        var input = button.parentNode.querySelector('input');
        input.select();
        var done = function () { button.textContent = '✓'; };
        if (navigator.clipboard && window.isSecureContext) {
          navigator.clipboard.writeText(input.value).then(done, function () {});
        } else {
          done();  // selected: Ctrl+C copies it (no clipboard API over plain HTTP)
        }
      });
    });
  }

  // --- the map beside the table ---------------------------------------------------------------

  function featureMap() {
    var node = document.querySelector('[data-ioc-map]');
    if (!node || !window.L) { return; }
    var map = L.map(node, {preferCanvas: false, zoomSnap: 0.5, attributionControl: false})
      .setView([10.7769, 106.7009], 11);
    L.control.scale({imperial: false}).addTo(map);
    var rows = {};
    document.querySelectorAll('tr[data-fid]').forEach(function (row) { rows[row.getAttribute('data-fid')] = row; });
    var shapes = {};
    var selected = null;

    function select(fid, fromMap) {
      if (selected !== null && shapes[selected]) { shapes[selected].setStyle(STYLE); }
      if (selected !== null && rows[selected]) { rows[selected].classList.remove('ioc-selected'); }
      selected = fid;
      state.selected = fid;
      var shape = shapes[fid];
      if (shape) {
        shape.setStyle(SELECTED);
        if (shape.bringToFront) { shape.bringToFront(); }
        if (!fromMap) {
          var bounds = shape.getBounds ? shape.getBounds() : null;
          if (bounds && bounds.isValid()) { map.fitBounds(bounds, {maxZoom: 17, padding: [30, 30]}); }
          else if (shape.getLatLng) { map.setView(shape.getLatLng(), Math.max(map.getZoom(), 16)); }
        }
      }
      var row = rows[fid];
      if (row) {
        row.classList.add('ioc-selected');
        if (fromMap) { row.scrollIntoView({block: 'nearest'}); }
      }
    }

    function draw(collection) {
      var layer = L.geoJSON(collection, {
        style: function () { return STYLE; },
        pointToLayer: function (feature, latlng) { return L.circleMarker(latlng, STYLE); },
        onEachFeature: function (feature, shape) {
          var fid = String(feature.id);
          shapes[fid] = shape;
          shape.on('click', function () { select(fid, true); });
          shape.bindTooltip(el('span', null, fid));  // an element: the id is shown as text
        }
      }).addTo(map);
      state.features = collection.features.length;
      var bounds = layer.getBounds();
      if (bounds.isValid()) { map.fitBounds(bounds, {maxZoom: 17, padding: [20, 20], animate: false}); }
      Object.keys(rows).forEach(function (fid) {
        rows[fid].addEventListener('click', function (event) {
          if (event.target.closest('a')) { return; }  // the id link opens the feature page
          select(fid, false);
        });
      });
      state.ready = true;
    }

    var block = document.getElementById('ioc-geojson');
    if (block) {
      draw(JSON.parse(block.textContent));
    } else if (node.getAttribute('data-items')) {
      fetchJSON(node.getAttribute('data-items')).then(draw).catch(function (error) {
        state.errors += 1;
        state.ready = true;
        console.warn('ioc: items: ' + error.message);
      });
    }
  }

  addressSearch();
  catalogForm();
  featureMap();
  // For people and tests: what the page has drawn.
  window.IocWeb = {status: function () { return JSON.parse(JSON.stringify(state)); }};
}());
