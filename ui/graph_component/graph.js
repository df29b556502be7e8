// The circuit graph component: draws the spec that ui/graph_view.graph_spec builds and sends events back.
//
// Protocol (Streamlit components v1, hand-written, no npm build): post "streamlit:componentReady",
// receive "streamlit:render" with args {spec, selected}, post "streamlit:setComponentValue" with
// {type, node, nodes, seq} and "streamlit:setFrameHeight".
// Events: "click" (a node: its card; `nodes` = the selection), "select" (shift-click or shift-drag box:
// `nodes` = the selection), "remove" (alt-click on a node).
// Edges of kind "qk" (ui/qk_view.py: effects through where a head attends) come with `dashes`, their own
// colours and a title; they are drawn, hovered and dimmed like the direct edges.
// Fitting the frame: `build` lays the spec's cells (node.cell = [position, row], from ui/graph_view.layout_frame)
// out again for the frame it has (`frameLayout`): columns as wide as their busiest cell needs, empty columns and
// rows narrow, one slot size for all cells so a cell's nodes never overlap however many share it, dots no wider
// than a slot; then the view fits the whole graph, centred. Labels keep a constant screen size and are shortened
// to the room a slot has on screen, or hidden where even a few letters do not fit (`fitLabels`, again after
// each zoom): zooming in shows more, hovering a node shows its full label, and the tooltip always has it.
// A supernode's label (the reader's name for a group) is always drawn whole.
// Safety: labels are drawn on the canvas, tooltips are set by vis-network 9.1.2 with innerText, the hint
// with textContent; no text from the spec is ever parsed as HTML.
/* global vis */
"use strict";

var network = null; // globals on purpose: tests and the benchmark read them
var nodes = null;
var edges = null;
var drawnAt = null; // performance.now() of the first draw of the current spec
var spec = null;
var selection = [];
var seq = 0;
var version = null;
var up = {}; // node id -> ids of its sources among drawn edges
var down = {}; // node id -> ids of its targets
var base = { nodes: {}, edges: {} }; // colours as the spec gave them, to undo a hover highlight
var highlighted = false;
var lay = null; // the frame layout of the current spec (frameLayout): slot size, columns, rows, extent
var full = {}; // node id -> its label as the spec gave it (what fitLabels shortens)
var shown = {}; // node id -> the label drawn now
var hovered = null; // the node whose full label is shown
var dimmed = {}; // node id -> true while a hover highlight greys it
var labelScale = null; // the zoom the labels were fitted at

var SLOT_MAX = { x: 110, y: 58 }; // never wider apart than the static layout (NODE_GAP, LINE_GAP)
var SLOT_MIN = 12; // px: below this the layout is wider than the frame and the fit zooms out
var EMPTY = 14; // px: a column or row with no node
var PAD = 8; // px between cells
var MARGIN = { left: 70, right: 10, top: 10, bottom: 24 }; // room for the row names and the token text
var FONT_PX = 11; // label size on screen, whatever the zoom
var LABEL_H = 16; // px a label needs under its dot

function post(type, extra) {
  window.parent.postMessage(Object.assign({ isStreamlitMessage: true, type: type }, extra), "*");
}

function send(type, node, nodesList) {
  seq += 1;
  post("streamlit:setComponentValue", {
    value: { type: type, node: node, nodes: nodesList, seq: seq, version: version },
    dataType: "json",
  });
}

function signed(w) {
  var t = Number(Number(w).toPrecision(4));
  return (t >= 0 ? "+" : "") + String(t);
}

function setHeight(h) {
  post("streamlit:setFrameHeight", { height: h });
}

function adjacency(edgeList) {
  up = {};
  down = {};
  edgeList.forEach(function (e) {
    (up[e.to] = up[e.to] || []).push(e.from);
    (down[e.from] = down[e.from] || []).push(e.to);
  });
}

function reach(start, next) {
  var seen = {};
  var stack = [start];
  seen[start] = true;
  while (stack.length) {
    var v = stack.pop();
    (next[v] || []).forEach(function (u) {
      if (!seen[u]) {
        seen[u] = true;
        stack.push(u);
      }
    });
  }
  return seen;
}

function highlight(id) {
  // Dim everything off the node's upstream and downstream paths.
  var a = reach(id, up);
  var b = reach(id, down);
  var on = function (v) {
    return a[v] || b[v];
  };
  dimmed = {};
  highlighted = true;
  hovered = id;
  nodes.update(
    spec.nodes.map(function (n) {
      dimmed[n.id] = !on(n.id);
      var label = n.id === id ? full[n.id] : shown[n.id];
      return on(n.id)
        ? { id: n.id, color: base.nodes[n.id], font: labelFont(n.id), label: label }
        : { id: n.id, color: { background: "#eeeeee", border: "#dddddd" }, font: labelFont(n.id), label: label };
    })
  );
  edges.update(
    spec.edges.map(function (e) {
      var path = (a[e.from] && a[e.to]) || (b[e.from] && b[e.to]);
      return { id: e.id, color: path ? base.edges[e.id] : { color: "#eeeeee", opacity: 0.4 } };
    })
  );
}

function unhighlight() {
  if (!highlighted) return;
  highlighted = false;
  hovered = null;
  dimmed = {};
  nodes.update(
    spec.nodes.map(function (n) {
      return { id: n.id, color: base.nodes[n.id], font: labelFont(n.id) };
    })
  );
  fitLabels();
  edges.update(
    spec.edges.map(function (e) {
      return { id: e.id, color: base.edges[e.id] };
    })
  );
}

function fit(text, px) {
  // `text` clipped to about `px` screen pixels (a column's width at this zoom).
  var n = Math.max(1, Math.floor(px / 7));
  return text.length > n ? text.slice(0, Math.max(1, n - 1)) + "\u2026" : text;
}

function drawAxes(ctx) {
  // Token text under each column and the row names at the left, as plain canvas text of a constant
  // screen size (13 px and 11 px whatever the zoom), clipped to the column's width on screen; a row name
  // closer than a line to the one below it is left out (they would overlap).
  if (!lay) return;
  var s = network.getScale();
  ctx.save();
  ctx.strokeStyle = "#f0f0f0";
  ctx.lineWidth = 1 / s;
  lay.columns.forEach(function (c) {
    ctx.beginPath();
    ctx.moveTo(c.x, lay.bottom);
    ctx.lineTo(c.x, lay.top);
    ctx.stroke();
  });
  ctx.font = 13 / s + "px sans-serif";
  ctx.fillStyle = "#333333";
  ctx.textAlign = "center";
  ctx.textBaseline = "top";
  lay.columns.forEach(function (c) {
    if (c.width * s >= 10) ctx.fillText(fit(c.text, c.width * s), c.x, lay.bottom + 4 / s);
  });
  ctx.textAlign = "right";
  ctx.textBaseline = "middle";
  ctx.fillStyle = "#888888";
  ctx.font = 11 / s + "px sans-serif";
  var last = Infinity;
  lay.rows.forEach(function (r) {
    if ((last - r.y) * s < 13) return;
    ctx.fillText(r.text, lay.left - 8 / s, r.y);
    last = r.y;
  });
  ctx.restore();
}

function frameLayout(width, height) {
  // The `gridLayout` with the largest slots (its smaller side: room for a dot) over a few numbers of nodes per
  // line; of those within 10% of the largest, the widest (labels read across). A frame with height to spare
  // thus stacks a busy cell's nodes in more lines, a wide one spreads them.
  var grids = [1, 2, 3, 4, 6, 8].map(function (perLine) {
    return gridLayout(width, height, perLine);
  });
  var room = function (g) {
    return Math.min(g.sx, g.sy);
  };
  var top = Math.max.apply(null, grids.map(room));
  return grids
    .filter(function (g) {
      return room(g) >= 0.9 * top;
    })
    .sort(function (a, b) {
      return b.sx - a.sx;
    })[0];
}

function gridLayout(width, height, perLine) {
  // Positions for the spec's nodes that fill a frame of width x height px at scale 1: every cell holds its
  // nodes in a grid of at most `perLine` per line, one slot (sx x sy px) per node; a column is as wide as
  // its busiest cell, a row as tall as its tallest. Returns {pos, radius, rMax, sx, sy, columns, rows} and the
  // extent {left, right, top, bottom}.
  var cells = {};
  var slots = {}; // position -> slots side by side
  var lines = {}; // row -> lines
  spec.columns.forEach(function (c) {
    slots[c.p] = 0;
  });
  spec.rows.forEach(function (r) {
    lines[r.r] = 0;
  });
  spec.nodes.forEach(function (n) {
    var c = n.cell || [0, 0];
    var k = c[0] + "," + c[1];
    (cells[k] = cells[k] || []).push(n);
    slots[c[0]] = Math.max(slots[c[0]] || 0, 1);
    lines[c[1]] = Math.max(lines[c[1]] || 0, 1);
  });
  Object.keys(cells).forEach(function (k) {
    var c = cells[k][0].cell || [0, 0];
    var n = cells[k].length;
    slots[c[0]] = Math.max(slots[c[0]], Math.min(n, perLine));
    lines[c[1]] = Math.max(lines[c[1]], Math.ceil(n / perLine));
  });
  var ascending = function (a, b) {
    return a - b;
  };
  var ps = Object.keys(slots).map(Number).sort(ascending);
  var rs = Object.keys(lines).map(Number).sort(ascending);
  var nSlots = 0;
  var nLines = 0;
  var fixedX = 0; // px of padding and empty columns
  var fixedY = 0;
  ps.forEach(function (p) {
    nSlots += slots[p];
    fixedX += slots[p] ? PAD : EMPTY;
  });
  rs.forEach(function (r) {
    nLines += lines[r];
    fixedY += lines[r] ? PAD : EMPTY;
  });
  var w = width - MARGIN.left - MARGIN.right;
  var h = height - MARGIN.top - MARGIN.bottom;
  var sx = Math.max(SLOT_MIN, Math.min(SLOT_MAX.x, (w - fixedX) / Math.max(1, nSlots)));
  var sy = Math.max(SLOT_MIN, Math.min(SLOT_MAX.y, (h - fixedY) / Math.max(1, nLines)));
  var xMid = {};
  var x = 0;
  var columns = ps.map(function (p) {
    var cw = slots[p] ? slots[p] * sx + PAD : EMPTY;
    xMid[p] = x + cw / 2;
    x += cw;
    var c = spec.columns.filter(function (q) {
      return q.p === p;
    })[0];
    return { x: xMid[p], width: cw, text: c ? c.text : "pos " + p };
  });
  var yMid = {};
  var y = 0;
  var rows = rs.map(function (r) {
    var rh = lines[r] ? lines[r] * sy + PAD : EMPTY;
    yMid[r] = y - rh / 2;
    y -= rh;
    var row = spec.rows.filter(function (q) {
      return q.r === r;
    })[0];
    return { y: yMid[r], text: row ? row.text : "" };
  });
  // Dots keep their relative sizes (influence) but fit their slot.
  var shrink = Math.min(1, (0.4 * Math.min(sx, sy)) / 16);
  var pos = {};
  var radius = {};
  Object.keys(cells).forEach(function (k) {
    var vs = cells[k].slice().sort(function (a, b) {
      return a.y - b.y || a.x - b.x; // ui/graph_view.layout_frame's order: line by line
    });
    var c = vs[0].cell || [0, 0];
    var cols = Math.min(vs.length, perLine);
    var nl = Math.ceil(vs.length / perLine);
    vs.forEach(function (n, i) {
      var col = i % perLine;
      var line = Math.floor(i / perLine);
      pos[n.id] = { x: xMid[c[0]] + (col - (cols - 1) / 2) * sx, y: yMid[c[1]] + (line - (nl - 1) / 2) * sy };
      radius[n.id] = Math.max(2, Math.min(0.45 * Math.min(sx, sy), (n.size || 10) * shrink));
    });
  });
  var rMax = 0;
  Object.keys(radius).forEach(function (k) {
    rMax = Math.max(rMax, radius[k]);
  });
  return {
    pos: pos,
    radius: radius,
    rMax: rMax,
    sx: sx,
    sy: sy,
    columns: columns,
    rows: rows,
    left: 0,
    right: x,
    top: y,
    bottom: 0,
  };
}

var measure = null;
function clipLabel(text, px) {
  // `text` shortened with an ellipsis to at most `px` screen pixels at FONT_PX; "" when not even two letters fit.
  if (!text) return "";
  if (!measure) {
    measure = document.createElement("canvas").getContext("2d");
    measure.font = FONT_PX + "px sans-serif";
  }
  var stroke = 4; // the white outline around the letters
  if (measure.measureText(text).width + stroke <= px) return text;
  for (var n = text.length - 1; n >= 2; n--) {
    var t = text.slice(0, n).replace(/\s+$/, "") + "\u2026";
    if (measure.measureText(t).width + stroke <= px) return t;
  }
  return "";
}

function fitLabels() {
  // Each label shortened to its slot's width on screen at this zoom, or hidden where its slot leaves no line
  // under the dot; the hovered node and supernodes show their full label. Sizes stay FONT_PX on screen.
  if (!lay || !nodes) return;
  var s = network.getScale();
  labelScale = s;
  var room = lay.sx * s - 6;
  var changes = [];
  spec.nodes.forEach(function (n) {
    var r = lay.radius[n.id] || 0;
    var fits = (lay.sy - r - lay.rMax) * s >= LABEL_H; // a line under its dot, above the next line's dots
    // A supernode's label is the reader's own name for a group: always drawn whole.
    var whole = n.id === hovered || n.kind === "supernode";
    var text = whole ? full[n.id] : fits ? clipLabel(full[n.id], room) : "";
    changes.push({ id: n.id, label: text, font: labelFont(n.id) });
    shown[n.id] = text;
  });
  nodes.update(changes);
}

function labelFont(id) {
  // A node's label font: FONT_PX on screen at this zoom, greyed while a hover highlight dims the node.
  var dim = highlighted && dimmed[id];
  return { size: FONT_PX / (network ? network.getScale() : 1), color: dim ? "#c8c8c8" : "#222222" };
}

function build(newSpec) {
  // The same prompt redrawn after an edit keeps the reader's zoom and pan; another circuit is fitted.
  var samePrompt = spec !== null && JSON.stringify(spec.columns) === JSON.stringify(newSpec.columns);
  spec = newSpec;
  var container = document.getElementById("mynetwork");
  container.style.height = spec.height + "px";
  document.getElementById("hint").textContent = spec.hint || "";
  base = { nodes: {}, edges: {} };
  spec.nodes.forEach(function (n) {
    base.nodes[n.id] = n.color;
  });
  spec.edges.forEach(function (e) {
    base.edges[e.id] = e.color;
  });
  adjacency(spec.edges);
  highlighted = false;
  hovered = null;
  dimmed = {};
  var view = network ? { position: network.getViewPosition(), scale: network.getScale() } : null;
  var keepView = network && samePrompt;
  spec.edges.forEach(function (e) {
    // Plain-text tooltip (vis-network sets a string title with innerText); weights are numbers.
    if (e.title === undefined) e.title = e.from + " \u2192 " + e.to + "\ndirect effect " + signed(e.weight);
  });
  lay = frameLayout(container.clientWidth || 800, spec.height);
  full = {};
  shown = {};
  var scale = keepView && view ? view.scale : 1;
  nodes = new vis.DataSet(
    spec.nodes.map(function (n) {
      full[n.id] = n.label || "";
      var p = lay.pos[n.id] || { x: n.x, y: n.y };
      // Drawn with no label until fitLabels has measured it against its slot.
      var size = lay.radius[n.id] || n.size;
      return Object.assign({}, n, { x: p.x, y: p.y, size: size, label: "", font: { size: FONT_PX / scale } });
    })
  );
  edges = new vis.DataSet(spec.edges);
  drawnAt = null;
  if (!network) {
    network = new vis.Network(container, { nodes: nodes, edges: edges }, spec.options);
    var pending = null;
    network.on("afterDrawing", function (ctx) {
      drawAxes(ctx);
      if (labelScale !== null && Math.abs(network.getScale() / labelScale - 1) > 1e-3) {
        // Labels follow any zoom (wheel, focus, fit) once it settles: measuring them on each step would stutter.
        clearTimeout(pending);
        pending = setTimeout(fitLabels, 60);
      }
      if (drawnAt === null) {
        drawnAt = performance.now();
        document.body.setAttribute("data-drawn", String(drawnAt));
      }
    });
    wire(container);
  } else {
    network.setData({ nodes: nodes, edges: edges });
  }
  if (keepView && view) {
    network.moveTo({ position: view.position, scale: view.scale, animation: false });
  } else {
    fitView();
  }
  fitLabels();
  setHeight(spec.height + document.getElementById("hint").offsetHeight + 10);
}

function fitView() {
  // The whole layout with its row names and token text, centred in the frame (vis-network's fit sees only nodes).
  var el = document.getElementById("mynetwork");
  var w = lay.right - lay.left + MARGIN.left + MARGIN.right;
  var h = lay.bottom - lay.top + MARGIN.top + MARGIN.bottom;
  var scale = Math.min(1, (el.clientWidth || 800) / w, spec.height / h); // never zoomed in past the layout's size
  var cx = (lay.left - MARGIN.left + lay.right + MARGIN.right) / 2;
  var cy = (lay.top - MARGIN.top + lay.bottom + MARGIN.bottom) / 2;
  network.moveTo({ position: { x: cx, y: cy }, scale: scale, animation: false });
}

function setSelection(ids) {
  var present = ids.filter(function (v) {
    return nodes.get(v) !== null;
  });
  selection = present;
  network.selectNodes(present, false);
}

function wire(container) {
  network.on("click", function (p) {
    var ev = (p.event && p.event.srcEvent) || {};
    if (!p.nodes.length) return;
    var id = p.nodes[0];
    if (ev.altKey) {
      send("remove", id, [id]);
      return;
    }
    if (ev.shiftKey || ev.ctrlKey || ev.metaKey) {
      var i = selection.indexOf(id);
      var next = selection.slice();
      if (i >= 0) next.splice(i, 1);
      else next.push(id);
      setSelection(next);
      send("select", id, selection.slice());
      return;
    }
    setSelection([id]);
    send("click", id, [id]);
  });
  network.on("hoverNode", function (p) {
    highlight(p.node);
  });
  network.on("blurNode", function () {
    unhighlight();
  });

  // Shift-drag on the canvas draws a box; the nodes inside it join the selection.
  var box = document.getElementById("box");
  var start = null;
  container.addEventListener(
    "pointerdown",
    function (ev) {
      if (!ev.shiftKey) return;
      var r = container.getBoundingClientRect();
      var at = { x: ev.clientX - r.left, y: ev.clientY - r.top };
      if (network.getNodeAt(at) !== undefined) return;
      start = { x: ev.clientX, y: ev.clientY };
      network.setOptions({ interaction: { dragView: false } });
    },
    true
  );
  window.addEventListener("pointermove", function (ev) {
    if (!start) return;
    box.style.display = "block";
    box.style.left = Math.min(start.x, ev.clientX) + "px";
    box.style.top = Math.min(start.y, ev.clientY) + "px";
    box.style.width = Math.abs(ev.clientX - start.x) + "px";
    box.style.height = Math.abs(ev.clientY - start.y) + "px";
  });
  window.addEventListener("pointerup", function (ev) {
    if (!start) return;
    var r = container.getBoundingClientRect();
    var x0 = Math.min(start.x, ev.clientX) - r.left;
    var x1 = Math.max(start.x, ev.clientX) - r.left;
    var y0 = Math.min(start.y, ev.clientY) - r.top;
    var y1 = Math.max(start.y, ev.clientY) - r.top;
    start = null;
    box.style.display = "none";
    network.setOptions({ interaction: { dragView: true } });
    if (x1 - x0 < 4 && y1 - y0 < 4) return;
    var pos = network.getPositions();
    var inside = Object.keys(pos).filter(function (id) {
      var d = network.canvasToDOM(pos[id]);
      return d.x >= x0 && d.x <= x1 && d.y >= y0 && d.y <= y1;
    });
    if (!inside.length) return;
    var next = selection.slice();
    inside.forEach(function (id) {
      if (next.indexOf(id) < 0) next.push(id);
    });
    setSelection(next);
    send("select", inside[0], selection.slice());
  });
}

window.addEventListener("message", function (event) {
  var data = event.data || {};
  if (data.type !== "streamlit:render") return;
  var args = data.args || {};
  if (!args.spec) return;
  if (args.spec.version !== version) {
    version = args.spec.version;
    build(args.spec);
  }
  setSelection(args.selected || []);
});

post("streamlit:componentReady", { apiVersion: 1 });
