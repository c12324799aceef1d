/* memsvc admin: knowledge-graph view. Vanilla JS, no dependencies (Apache-2.0, part of memsvc).
 * A small force layout on a <canvas>: drag nodes, drag the background to pan, wheel to zoom,
 * click a node to load its memories into #entity-panel through htmx. Names are drawn with
 * fillText, so entity text is never parsed as HTML. */
(function () {
  "use strict";
  var canvas = document.getElementById("graph");
  if (!canvas) return;
  var status = document.getElementById("graph-status");
  var ctx = canvas.getContext("2d");
  var palette = ["#5b8def", "#2fa37a", "#d9822b", "#9b59b6", "#e05d6f", "#1aa3b8", "#8a6d3b", "#607d8b"];
  var nodes = [], edges = [], byId = {};
  var view = { k: 1, x: 0, y: 0 };
  var alpha = 1, running = false, selected = null, hover = null, userMoved = false;
  var dpr = window.devicePixelRatio || 1;

  function colour(label) {
    if (!label) return "#7a8699";
    var h = 0;
    for (var i = 0; i < label.length; i++) h = (h * 31 + label.charCodeAt(i)) >>> 0;
    return palette[h % palette.length];
  }

  function resize() {
    var r = canvas.getBoundingClientRect();
    canvas.width = Math.max(1, Math.round(r.width * dpr));
    canvas.height = Math.max(1, Math.round(r.height * dpr));
    draw();
  }

  function toScreen(n) { return { x: n.x * view.k + view.x, y: n.y * view.k + view.y }; }
  function toWorld(px, py) { return { x: (px - view.x) / view.k, y: (py - view.y) / view.k }; }

  function nodeAt(px, py) {
    var p = toWorld(px, py), best = null, bestD = Infinity;
    for (var i = 0; i < nodes.length; i++) {
      var n = nodes[i], dx = n.x - p.x, dy = n.y - p.y, d = dx * dx + dy * dy;
      var r = n.r + 4 / view.k;
      if (d < r * r && d < bestD) { best = n; bestD = d; }
    }
    return best;
  }

  function tick() {
    var i, j, a, b, dx, dy, d2, d, f;
    if (alpha <= 0) return;
    for (i = 0; i < nodes.length; i++) {  // repulsion (n <= the cap, so O(n^2) is fine)
      a = nodes[i];
      for (j = i + 1; j < nodes.length; j++) {
        b = nodes[j]; dx = a.x - b.x; dy = a.y - b.y; d2 = dx * dx + dy * dy + 0.01;
        if (d2 > 250000) continue;
        f = 900 * alpha / d2; a.vx += dx * f; a.vy += dy * f; b.vx -= dx * f; b.vy -= dy * f;
      }
    }
    for (i = 0; i < edges.length; i++) {  // springs
      a = edges[i].s; b = edges[i].t; dx = b.x - a.x; dy = b.y - a.y;
      d = Math.sqrt(dx * dx + dy * dy) || 1; f = (d - 70) * 0.04 * alpha / d;
      a.vx += dx * f; a.vy += dy * f; b.vx -= dx * f; b.vy -= dy * f;
    }
    for (i = 0; i < nodes.length; i++) {  // gravity to the centre, damping
      a = nodes[i];
      a.vx -= a.x * 0.01 * alpha; a.vy -= a.y * 0.01 * alpha;
      if (a.fixed) { a.vx = a.vy = 0; continue; }
      a.vx *= 0.6; a.vy *= 0.6; a.x += a.vx; a.y += a.vy;
    }
    alpha *= 0.985;
  }

  function loop() {
    tick();
    if (alpha > 0.02) { draw(); requestAnimationFrame(loop); return; }
    running = false;
    if (!userMoved) fit();
    draw();
  }

  function fit() {  // zoom and pan so that every node (and its label) is in view
    if (!nodes.length) return;
    var r = canvas.getBoundingClientRect(), x0 = Infinity, y0 = Infinity, x1 = -Infinity, y1 = -Infinity;
    nodes.forEach(function (n) {
      x0 = Math.min(x0, n.x - n.r); y0 = Math.min(y0, n.y - n.r);
      x1 = Math.max(x1, n.x + n.r + 8 + 6.5 * n.name.length); y1 = Math.max(y1, n.y + n.r);
    });
    var pad = 30, k = Math.min((r.width - 2 * pad) / Math.max(1, x1 - x0), (r.height - 2 * pad) / Math.max(1, y1 - y0), 2.5);
    view.k = Math.max(0.2, k);
    view.x = r.width / 2 - view.k * (x0 + x1) / 2;
    view.y = r.height / 2 - view.k * (y0 + y1) / 2;
  }

  function heat(value) {
    alpha = Math.max(alpha, value);
    if (!running) { running = true; requestAnimationFrame(loop); }
  }

  function neighbours(n) {
    var set = {};
    edges.forEach(function (e) { if (e.s === n) set[e.t.id] = true; if (e.t === n) set[e.s.id] = true; });
    return set;
  }

  function draw() {
    ctx.setTransform(dpr, 0, 0, dpr, 0, 0);
    ctx.clearRect(0, 0, canvas.width, canvas.height);
    ctx.translate(view.x, view.y);
    ctx.scale(view.k, view.k);
    var near = selected ? neighbours(selected) : null;
    ctx.lineWidth = 1 / view.k;
    edges.forEach(function (e) {
      var on = selected && (e.s === selected || e.t === selected);
      ctx.strokeStyle = on ? "#2f5bd3" : "rgba(120,130,150,0.35)";
      ctx.beginPath(); ctx.moveTo(e.s.x, e.s.y); ctx.lineTo(e.t.x, e.t.y); ctx.stroke();
      if (on || view.k > 1.8) {
        ctx.fillStyle = on ? "#2f5bd3" : "#98a2b3";
        ctx.font = (10 / view.k) + "px system-ui, sans-serif";
        ctx.fillText(e.predicate, (e.s.x + e.t.x) / 2, (e.s.y + e.t.y) / 2);
      }
    });
    nodes.forEach(function (n) {
      var dim = near && n !== selected && !near[n.id];
      ctx.globalAlpha = dim ? 0.3 : 1;
      ctx.beginPath(); ctx.arc(n.x, n.y, n.r, 0, 2 * Math.PI);
      ctx.fillStyle = n.colour; ctx.fill();
      if (n === selected || n === hover) {
        ctx.lineWidth = 3 / view.k; ctx.strokeStyle = "#18202f"; ctx.stroke(); ctx.lineWidth = 1 / view.k;
      }
      if (n.r > 7 || view.k > 1.2 || n === selected || n === hover || (near && near[n.id]) || nodes.length <= 60) {
        ctx.fillStyle = "#1d2330";
        ctx.font = ((n === selected ? 13 : 11) / view.k) + "px system-ui, sans-serif";
        ctx.fillText(n.name, n.x + n.r + 3 / view.k, n.y + 4 / view.k);
      }
    });
    ctx.globalAlpha = 1;
  }

  function select(n) {
    selected = n; draw();
    if (!n) return;
    var url = canvas.dataset.entityUrl + encodeURIComponent(n.id);
    if (window.htmx) {
      window.htmx.ajax("GET", url, { target: "#entity-panel", swap: "innerHTML" });
    }
  }

  // -- pointer: drag a node, pan the background, click to select --------------------------
  var drag = null;
  canvas.addEventListener("pointerdown", function (ev) {
    var r = canvas.getBoundingClientRect(), px = ev.clientX - r.left, py = ev.clientY - r.top;
    var n = nodeAt(px, py);
    drag = { node: n, px: px, py: py, vx: view.x, vy: view.y, moved: false };
    userMoved = true;
    if (n) { n.fixed = true; }
    canvas.setPointerCapture(ev.pointerId);
    canvas.classList.add("dragging");
  });
  canvas.addEventListener("pointermove", function (ev) {
    var r = canvas.getBoundingClientRect(), px = ev.clientX - r.left, py = ev.clientY - r.top;
    if (!drag) {
      var h = nodeAt(px, py);
      if (h !== hover) { hover = h; canvas.title = h ? h.name + (h.label ? " (" + h.label + ")" : "") : ""; draw(); }
      return;
    }
    if (Math.abs(px - drag.px) + Math.abs(py - drag.py) > 3) drag.moved = true;
    if (drag.node) {
      var w = toWorld(px, py); drag.node.x = w.x; drag.node.y = w.y; heat(0.3);
    } else {
      view.x = drag.vx + px - drag.px; view.y = drag.vy + py - drag.py;
    }
    draw();
  });
  function endDrag(ev) {
    if (!drag) return;
    if (drag.node) drag.node.fixed = false;
    if (!drag.moved) select(drag.node);
    drag = null;
    canvas.classList.remove("dragging");
    if (ev && ev.pointerId !== undefined && canvas.hasPointerCapture(ev.pointerId)) canvas.releasePointerCapture(ev.pointerId);
  }
  canvas.addEventListener("pointerup", endDrag);
  canvas.addEventListener("pointercancel", endDrag);
  canvas.addEventListener("wheel", function (ev) {
    ev.preventDefault();
    userMoved = true;
    var r = canvas.getBoundingClientRect(), px = ev.clientX - r.left, py = ev.clientY - r.top;
    var k = Math.min(6, Math.max(0.2, view.k * Math.exp(-ev.deltaY * 0.0015)));
    view.x = px - (px - view.x) * (k / view.k); view.y = py - (py - view.y) * (k / view.k); view.k = k;
    draw();
  }, { passive: false });

  // -- load --------------------------------------------------------------------------------
  function load(data) {
    var count = data.nodes.length;
    data.nodes.forEach(function (d, i) {
      var a = 2 * Math.PI * i / Math.max(1, count), rad = 40 + 8 * Math.sqrt(i);
      var n = { id: d.id, name: d.name, label: d.label, mentions: d.mentions, x: Math.cos(a) * rad, y: Math.sin(a) * rad,
                vx: 0, vy: 0, r: 5 + Math.min(12, 2 * Math.sqrt(d.mentions || 1)), colour: colour(d.label) };
      nodes.push(n); byId[n.id] = n;
    });
    data.edges.forEach(function (e) {
      if (byId[e.source] && byId[e.target]) edges.push({ s: byId[e.source], t: byId[e.target], predicate: e.predicate });
    });
    var r = canvas.getBoundingClientRect();
    view.x = r.width / 2; view.y = r.height / 2;
    status.textContent = count === 0 ? "This user has no graph entities yet." :
      "Showing " + count + " of " + data.total_entities + " entities" +
      (data.truncated ? " (capped at " + data.cap + ", the most-mentioned first)" : "") +
      " and " + edges.length + " of " + data.total_relations + " relations.";
    canvas.dataset.loaded = "true";
    for (var i = 0; i < 120; i++) tick();  // settle before the first frame
    fit(); draw(); heat(0.5);
    var focus = canvas.dataset.focus && byId[canvas.dataset.focus];
    if (focus) select(focus);
  }

  // A hook for the browser tests (and for the console): where a node is drawn.
  window.memsvcGraph = {
    nodes: function () { return nodes.map(function (n) { var p = toScreen(n); return { id: n.id, name: n.name, x: p.x, y: p.y }; }); },
    settle: function () {  // finish the layout now, so that node positions stay put
      for (var i = 0; i < 500 && alpha > 0.02; i++) tick();
      alpha = 0;
      nodes.forEach(function (n) { n.vx = n.vy = 0; });
      if (!userMoved) fit();
      draw();
    }
  };

  var fitButton = document.getElementById("graph-fit");
  if (fitButton) fitButton.addEventListener("click", function () { fit(); draw(); });

  new ResizeObserver(resize).observe(canvas);
  resize();
  fetch(canvas.dataset.src, { credentials: "same-origin", headers: { "Accept": "application/json" } })
    .then(function (res) {
      if (res.status === 401) { throw new Error("Your session has expired; log in again."); }
      if (!res.ok) { throw new Error("Could not load the graph (HTTP " + res.status + ")."); }
      return res.json();
    })
    .then(load)
    .catch(function (err) { status.textContent = err.message; status.classList.add("error"); });
})();
