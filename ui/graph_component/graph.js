// The circuit graph component: draws the spec that ui/graph_view.graph_spec builds and sends events back.
//
// Protocol (Streamlit components v1, hand-written, no npm build): post "streamlit:componentReady",
// receive "streamlit:render" with args {spec, selected}, post "streamlit:setComponentValue" with
// {type, node, nodes, seq} and "streamlit:setFrameHeight".
// Events: "click" (a node: its card; `nodes` = the selection), "select" (shift-click or shift-drag box:
// `nodes` = the selection), "remove" (alt-click on a node).
// Edges of kind "qk" (ui/qk_view.py: effects through where a head attends) come with `dashes`, their own
// colours and a title; they are drawn, hovered and dimmed like the direct edges.
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
  nodes.update(
    spec.nodes.map(function (n) {
      return on(n.id)
        ? { id: n.id, color: base.nodes[n.id], font: { color: "#222222" } }
        : { id: n.id, color: { background: "#eeeeee", border: "#dddddd" }, font: { color: "#c8c8c8" } };
    })
  );
  edges.update(
    spec.edges.map(function (e) {
      var path = (a[e.from] && a[e.to]) || (b[e.from] && b[e.to]);
      return { id: e.id, color: path ? base.edges[e.id] : { color: "#eeeeee", opacity: 0.4 } };
    })
  );
  highlighted = true;
}

function unhighlight() {
  if (!highlighted) return;
  nodes.update(
    spec.nodes.map(function (n) {
      return { id: n.id, color: base.nodes[n.id], font: { color: "#222222" } };
    })
  );
  edges.update(
    spec.edges.map(function (e) {
      return { id: e.id, color: base.edges[e.id] };
    })
  );
  highlighted = false;
}

function fit(text, px) {
  // `text` clipped to about `px` screen pixels (a column's width at this zoom).
  var n = Math.max(1, Math.floor(px / 7));
  return text.length > n ? text.slice(0, Math.max(1, n - 1)) + "\u2026" : text;
}

function drawAxes(ctx) {
  // Token text under each column and the row names at the left, as plain canvas text of a constant
  // screen size (13 px and 11 px whatever the zoom), clipped to the column's width on screen.
  if (!spec) return;
  var s = network.getScale();
  ctx.save();
  ctx.strokeStyle = "#f0f0f0";
  ctx.lineWidth = 1 / s;
  spec.columns.forEach(function (c) {
    ctx.beginPath();
    ctx.moveTo(c.x, spec.bottom - 18);
    ctx.lineTo(c.x, spec.top);
    ctx.stroke();
  });
  ctx.font = 13 / s + "px sans-serif";
  ctx.fillStyle = "#333333";
  ctx.textAlign = "center";
  ctx.textBaseline = "top";
  spec.columns.forEach(function (c) {
    ctx.fillText(fit(c.text, c.width * s), c.x, spec.bottom);
  });
  ctx.textAlign = "right";
  ctx.textBaseline = "middle";
  ctx.fillStyle = "#888888";
  ctx.font = 11 / s + "px sans-serif";
  spec.rows.forEach(function (r) {
    ctx.fillText(r.text, spec.left, r.y);
  });
  ctx.restore();
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
  var view = network ? { position: network.getViewPosition(), scale: network.getScale() } : null;
  var keepView = network && samePrompt;
  spec.edges.forEach(function (e) {
    // Plain-text tooltip (vis-network sets a string title with innerText); weights are numbers.
    if (e.title === undefined) e.title = e.from + " \u2192 " + e.to + "\ndirect effect " + signed(e.weight);
  });
  nodes = new vis.DataSet(spec.nodes);
  edges = new vis.DataSet(spec.edges);
  drawnAt = null;
  if (!network) {
    network = new vis.Network(container, { nodes: nodes, edges: edges }, spec.options);
    network.on("afterDrawing", function (ctx) {
      drawAxes(ctx);
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
    network.fit({ animation: false });
    // Room for the token text under the columns and the row names at the left (fit sees only the nodes).
    var sc = network.getScale() * 0.9;
    var p = network.getViewPosition();
    network.moveTo({ position: { x: p.x - 28 / sc, y: p.y + 14 / sc }, scale: sc, animation: false });
  }
  setHeight(spec.height + document.getElementById("hint").offsetHeight + 10);
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
