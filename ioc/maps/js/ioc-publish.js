/* The publishing page (/publish). Uses the public API only: /maps/session to sign in,
 * GET /layers for the department's layers, uploads with ?dry_run=true (XHR, for the upload
 * progress), /layers/previews/{token} to draw and publish a preview, versions and audit.
 *
 * Rules of ioc's pages (docs/security.md): no inline script, no outside request, text from the
 * server goes into the page with textContent only. Writes carry the X-IOC-Session header: the
 * server lets the page's session cookie stand for the key on writes only with it.
 */
(function () {
  "use strict";

  var body = document.body;
  var base = body.dataset.base || "";
  var state = { step: "idle", preview: null, layer: null, drawn: { live: 0, preview: 0 }, basemapTiles: 0, errors: 0 };
  var map = null;
  var overlays = [];

  function $(id) { return document.getElementById(id); }

  function text(id, value) { $(id).textContent = value == null ? "—" : String(value); }

  function showError(message) {
    state.errors += 1;
    state.step = "error";
    $("error").textContent = message;
    $("error").hidden = false;
    $("progress").hidden = true;
  }

  function clearError() { $("error").hidden = true; $("error").textContent = ""; }

  function sentence(status, payload) {
    if (payload && payload.description) { return payload.description; }
    return "Máy chủ trả lời " + status + " / The server answered " + status + ".";
  }

  /* A JSON request to the API; rejects with the server's sentence. */
  function api(method, url, json) {
    var headers = { Accept: "application/json" };
    if (method !== "GET") { headers["X-IOC-Session"] = "1"; }
    if (json !== undefined) { headers["Content-Type"] = "application/json"; }
    return fetch(base + url, {
      method: method, headers: headers, credentials: "same-origin",
      body: json === undefined ? undefined : JSON.stringify(json)
    }).then(function (response) {
      if (response.status === 204) { return null; }
      return response.json().catch(function () { return null; }).then(function (payload) {
        if (!response.ok) { throw new Error(sentence(response.status, payload)); }
        return payload;
      });
    });
  }

  /* Upload a file as the request body with progress: the bytes sent, then the validation. */
  function upload(url, file) {
    return new Promise(function (resolve, reject) {
      var xhr = new XMLHttpRequest();
      xhr.open(url.method, base + url.path);
      xhr.setRequestHeader("X-IOC-Session", "1");
      xhr.setRequestHeader("Content-Type", "application/octet-stream");
      xhr.setRequestHeader("Accept", "application/json");
      $("progress").hidden = false;
      $("progress-bar").value = 0;
      state.step = "uploading";
      text("progress-step", "Đang tải lên… / Uploading…");
      xhr.upload.onprogress = function (event) {
        if (event.lengthComputable) { $("progress-bar").value = Math.round(100 * event.loaded / event.total); }
      };
      xhr.upload.onload = function () {
        state.step = "validating";
        $("progress-bar").removeAttribute("value");  // indeterminate while the server checks
        text("progress-step", "Đang kiểm tra dữ liệu… / Validating…");
      };
      xhr.onload = function () {
        var payload = null;
        try { payload = JSON.parse(xhr.responseText); } catch (e) { payload = null; }
        $("progress").hidden = true;
        if (xhr.status >= 200 && xhr.status < 300) { resolve(payload); }
        else { reject(new Error(sentence(xhr.status, payload))); }
      };
      xhr.onerror = function () { $("progress").hidden = true; reject(new Error("Mất kết nối / The connection failed.")); };
      xhr.send(file);
    });
  }

  function cell(row, value) {
    var td = document.createElement("td");
    td.textContent = value == null ? "—" : String(value);
    row.appendChild(td);
    return td;
  }

  function button(label, onClick) {
    var b = document.createElement("button");
    b.type = "button";
    b.textContent = label;
    b.addEventListener("click", onClick);
    return b;
  }

  function when(iso) { return iso ? new Date(iso).toLocaleString("vi-VN") : "—"; }

  /* --- the department's layers ------------------------------------------------------------ */

  function loadLayers() {
    return api("GET", "/layers").then(function (doc) {
      var tbody = $("layer-table").querySelector("tbody");
      tbody.textContent = "";
      doc.layers.forEach(function (layer) {
        var row = document.createElement("tr");
        row.dataset.layer = layer.id;
        cell(row, layer.title.vi + " / " + layer.title.en + " (" + layer.id + ")");
        cell(row, when(layer.last_update));
        cell(row, layer.version);
        cell(row, layer.feature_count.toLocaleString("vi-VN"));
        cell(row, layer.access);
        var actions = document.createElement("td");
        actions.appendChild(button("Tải lên / Upload", function () { chooseLayer(layer); }));
        actions.appendChild(button("Phiên bản / Versions", function () { showHistory(layer.id); }));
        row.appendChild(actions);
        tbody.appendChild(row);
      });
      state.layers = doc.layers.length;
    });
  }

  function chooseLayer(layer) {
    state.layer = layer.id;
    text("upload-layer", layer.id);
    $("upload").hidden = false;
  }

  function showHistory(layerId) {
    text("history-layer", layerId);
    $("history").hidden = false;
    return Promise.all([
      api("GET", "/layers/" + encodeURIComponent(layerId) + "/versions"),
      api("GET", "/layers/" + encodeURIComponent(layerId) + "/audit")
    ]).then(function (docs) {
      var versions = $("versions").querySelector("tbody");
      versions.textContent = "";
      docs[0].versions.forEach(function (v) {
        var row = document.createElement("tr");
        [v.version, v.operation, v.feature_count, v.principal, when(v.created_at)].forEach(function (x) { cell(row, x); });
        var td = document.createElement("td");
        if (v.restorable && v.version !== docs[0].current) {
          td.appendChild(button("Khôi phục / Restore", function () { restore(layerId, v.version); }));
        }
        row.appendChild(td);
        versions.appendChild(row);
      });
      var audit = $("audit").querySelector("tbody");
      audit.textContent = "";
      docs[1].audit.forEach(function (a) {
        var row = document.createElement("tr");
        [when(a.at), a.action, a.principal, a.version].forEach(function (x) { cell(row, x); });
        audit.appendChild(row);
      });
    }).catch(function (e) { showError(e.message); });
  }

  function restore(layerId, version) {
    clearError();
    api("POST", "/layers/" + encodeURIComponent(layerId) + "/versions/" + version + "/restore")
      .then(function (report) {
        published(layerId, report.version);
        return loadLayers().then(function () { return showHistory(layerId); });
      })
      .catch(function (e) { showError(e.message); });
  }

  /* --- dry runs and the preview ----------------------------------------------------------- */

  function dryRun(request, file) {
    clearError();
    if (!file) { showError("Hãy chọn một tệp. / Choose a file first."); return; }
    $("published").hidden = true;
    upload(request, file).then(showPreview).catch(function (e) { showError(e.message); });
  }

  function createPreview() {
    var file = $("create-file").files[0];
    state.layer = null;
    var name = file ? encodeURIComponent(file.name) : "";
    dryRun({ method: "POST", path: "/layers?dry_run=true&filename=" + name }, file);
  }

  function uploadPreview() {
    var file = $("upload-file").files[0];
    var mode = $("upload-mode").value;
    var name = file ? encodeURIComponent(file.name) : "";
    var path = "/layers/" + encodeURIComponent(state.layer) + "/data?dry_run=true&filename=" + name;
    dryRun({ method: mode === "append" ? "POST" : "PUT", path: path }, file);
  }

  function fillSelect(id, names) {
    var select = $(id);
    while (select.options.length > 1) { select.remove(1); }
    names.forEach(function (name) {
      var option = document.createElement("option");
      option.value = name;
      option.textContent = name;
      select.appendChild(option);
    });
  }

  function showPreview(report) {
    state.preview = report;
    state.step = "preview";
    $("preview").hidden = false;
    text("report-accepted", report.accepted);
    text("report-repaired", report.repaired);
    text("report-rejected", report.rejected);
    var inference = report.inference;
    text("report-crs", "EPSG:" + report.source_srid + (inference ? " — " + inference.crs_name : ""));
    text("report-extent", report.extent ? report.extent.join(", ") : null);
    text("report-added", report.changes.added);
    text("report-removed", report.changes.removed);
    text("report-modified", report.changes.modified);
    text("preview-expires", "Bản xem trước hết hạn lúc / The preview expires at " + when(report.preview.expires_at));
    var reasons = $("reasons").querySelector("tbody");
    reasons.textContent = "";
    report.reasons.forEach(function (r) {
      var row = document.createElement("tr");
      cell(row, r.row);
      cell(row, r.reason);
      reasons.appendChild(row);
    });
    $("reasons").hidden = report.reasons.length === 0;
    $("new-layer").hidden = !inference;
    if (inference) {
      var stem = (report.manifest && report.manifest.title.vi) || "";
      $("title-vi").value = stem;
      $("title-en").value = "";
      fillSelect("id-attribute", inference.id_candidates);
      fillSelect("time-attribute", inference.time_candidates);
      text("inferred", inference.count + " × " + inference.geometry_type + ", " +
        inference.attributes.map(function (a) { return a.name + " (" + a.type + ")"; }).join(", "));
    }
    drawPreview(report);
  }

  function geojsonLayer(doc, colour) {
    return L.geoJSON(doc, {
      style: function () { return { color: colour, weight: 2, fillOpacity: 0.25 }; },
      pointToLayer: function (feature, latlng) {
        return L.circleMarker(latlng, { radius: 5, color: colour, fillColor: colour, fillOpacity: 0.8, weight: 1 });
      }
    });
  }

  /* ioc's own basemap (water, roads, wards) from its vector tiles, styled as the map pages
   * style it (the server sends the layers and their styles): where the data lies. */
  function basemap(cfg) {
    var styles = {};
    cfg.layers.forEach(function (sub) {
      var s = sub.style, opacity = s.opacity == null ? 0.9 : s.opacity;
      styles[sub.id] = sub.geometry === "polygon"
        ? { color: s.color, weight: s.width || 1, opacity: opacity, fill: true,
            fillColor: s.fill || s.color, fillOpacity: s.fill ? Math.min(opacity, 0.45) : 0 }
        : sub.geometry === "line"
          ? { color: s.color, weight: s.width || 2, opacity: opacity }
          : { radius: s.radius || 2, color: s.color, opacity: opacity, fill: true, fillColor: s.color };
    });
    $("preview-map").style.background = cfg.background || "";
    var grid = L.vectorGrid.protobuf(cfg.url, {
      vectorTileLayerStyles: styles, rendererFactory: L.canvas.tile, interactive: false,
      pane: "tilePane", maxNativeZoom: 22, maxZoom: 22,
      fetchOptions: { credentials: "same-origin" }
    });
    grid.on("tileload", function () { state.basemapTiles += 1; });
    grid.on("tileerror", function () { state.errors += 1; });
    return grid;
  }

  function drawPreview(report) {
    if (!map) {
      map = L.map("preview-map", { preferCanvas: false, attributionControl: false });
      var cfg = body.dataset.basemap ? JSON.parse(body.dataset.basemap) : null;
      if (cfg && L.vectorGrid) { basemap(cfg).addTo(map); }
    }
    overlays.forEach(function (layer) { map.removeLayer(layer); });
    overlays = [];
    if (report.extent) {
      map.fitBounds([[report.extent[1], report.extent[0]], [report.extent[3], report.extent[2]]], { padding: [20, 20] });
    } else {
      map.setView([10.78, 106.7], 11);
    }
    var token = encodeURIComponent(report.preview.token);
    var jobs = [api("GET", "/layers/previews/" + token + "/items").then(function (doc) {
      state.drawn.preview = doc.features.length;
      return { doc: doc, colour: "#fb8500", order: 1 };
    })];
    if (state.layer) {  // the live data under the new one
      jobs.push(api("GET", "/collections/" + encodeURIComponent(state.layer) + "/items?limit=5000").then(function (doc) {
        state.drawn.live = doc.features.length;
        return { doc: doc, colour: "#8c959f", order: 0 };
      }));
    }
    return Promise.all(jobs).then(function (drawn) {
      drawn.sort(function (a, b) { return a.order - b.order; }).forEach(function (d) {
        var layer = geojsonLayer(d.doc, d.colour).addTo(map);
        overlays.push(layer);
      });
      state.step = "preview-drawn";
    }).catch(function (e) { showError(e.message); });
  }

  function fields() {
    var form = $("new-layer");
    var out = {};
    ["title_vi", "title_en", "domain", "access", "id_attribute", "time_attribute"].forEach(function (name) {
      var value = form.elements[name].value.trim();
      if (value) { out[name] = value; }
    });
    return out;
  }

  function publish() {
    clearError();
    var report = state.preview;
    if (!report) { return; }
    var token = encodeURIComponent(report.preview.token);
    var json = report.inference ? fields() : undefined;
    state.step = "publishing";
    api("POST", "/layers/previews/" + token + "/publish", json).then(function (done) {
      state.preview = null;
      $("preview").hidden = true;
      published(done.layer, done.version);
      return loadLayers();
    }).catch(function (e) { showError(e.message); });
  }

  function published(layerId, version) {
    state.step = "published";
    state.published = layerId;
    text("published-layer", layerId);
    text("published-version", "v" + version);
    $("published-map").href = base + "/maps/preview/" + encodeURIComponent(layerId);
    $("published").hidden = false;
  }

  function discard() {
    var report = state.preview;
    if (!report) { return; }
    api("DELETE", "/layers/previews/" + encodeURIComponent(report.preview.token)).then(function () {
      state.preview = null;
      state.step = "idle";
      $("preview").hidden = true;
    }).catch(function (e) { showError(e.message); });
  }

  /* --- signing in and out ----------------------------------------------------------------- */

  function signIn(event) {
    event.preventDefault();
    clearError();
    var key = $("key").value.trim();
    fetch(base + "/maps/session", {
      method: "POST", credentials: "same-origin",
      headers: { Authorization: "Bearer " + key, Accept: "application/json" }
    }).then(function (response) {
      $("key").value = "";
      if (!response.ok) { throw new Error("Khoá API không hợp lệ hoặc đã bị thu hồi. / The API key is unknown or revoked."); }
      window.location.reload();
    }).catch(function (e) { showError(e.message); });
  }

  function signOut() {
    fetch(base + "/maps/session", { method: "DELETE", credentials: "same-origin" })
      .then(function () { window.location.reload(); });
  }

  window.IocPublish = { status: function () { return state; } };

  if (body.dataset.signedIn !== "yes") {
    $("signin-form").addEventListener("submit", signIn);
    state.step = "signed-out";
    return;
  }
  $("signout").addEventListener("click", signOut);
  $("create-preview").addEventListener("click", createPreview);
  $("upload-preview").addEventListener("click", uploadPreview);
  $("publish").addEventListener("click", publish);
  $("discard").addEventListener("click", discard);
  loadLayers().then(function () { state.step = "ready"; }).catch(function (e) { showError(e.message); });
})();
