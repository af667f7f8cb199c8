/* gnn-transformer explorer: draws the attention of one model run as weighted edges of a token
 * graph and as a dense matrix.  Plain JavaScript and SVG, no library; the data is the JSON in
 * <script id="explorer-data"> (see gnn_transformer/explorer/data.py for its fields).
 *
 * Edge convention: edge j -> i means token i (the query, the target) attends to token j (the
 * key, the source); the weights into each target sum to 1.  Every drawn edge carries
 * data-source, data-target, data-weight and data-score (and data-bias where the attention adds a
 * per-edge bias, such as T5's relative position buckets); its stroke width and opacity encode
 * the weight by ENCODING (exposed as window.gnnExplorer.encoding).
 */
(function () {
  "use strict";

  var SVG_NS = "http://www.w3.org/2000/svg";
  var ENCODING = { minWidth: 0.6, widthPerWeight: 6, minOpacity: 0.12, opacityPerWeight: 0.88 };
  var BLUES = [[247, 251, 255], [198, 219, 239], [107, 174, 214], [33, 113, 181], [8, 48, 107]];
  var data = JSON.parse(document.getElementById("explorer-data").textContent);
  var state = { kind: data.kinds[0].kind, layer: 0, head: "0" };
  var tooltip = document.getElementById("tooltip");

  function byId(id) { return document.getElementById(id); }

  function make(name, attributes, parent) {
    var element = document.createElementNS(SVG_NS, name);
    Object.keys(attributes || {}).forEach(function (key) { element.setAttribute(key, attributes[key]); });
    if (parent) { parent.appendChild(element); }
    return element;
  }

  function clear(element) { while (element.firstChild) { element.removeChild(element.firstChild); } }

  function escapeText(text) {
    return String(text).replace(/[&<>"]/g, function (c) {
      return { "&": "&amp;", "<": "&lt;", ">": "&gt;", '"': "&quot;" }[c];
    });
  }

  function format(value) { return value === null ? "\u2212\u221e" : value.toFixed(4); }

  function blues(weight) {
    var t = Math.max(0, Math.min(1, weight)) * (BLUES.length - 1);
    var k = Math.min(Math.floor(t), BLUES.length - 2), f = t - k;
    var rgb = BLUES[k].map(function (c, n) { return Math.round(c + f * (BLUES[k + 1][n] - c)); });
    return "rgb(" + rgb.join(",") + ")";
  }

  function kindLabel(kind) {
    return data.kinds.filter(function (k) { return k.kind === kind; })[0].label;
  }

  function viewsOf(kind) { return data.views.filter(function (v) { return v.kind === kind; }); }

  function currentView() {
    return data.views.filter(function (v) { return v.kind === state.kind && v.layer === state.layer; })[0];
  }

  /* The mean over heads; null if any head's value is null (a blocked edge, score -inf). */
  function mean(values) {
    return values.indexOf(null) >= 0 ? null : values.reduce(function (a, b) { return a + b; }, 0) / values.length;
  }

  /* The edges of the chosen view and head ("mean": the mean over heads), drawing order: light first. */
  function edgesOf(view) {
    var edges = view.edges.map(function (pair, index) {
      var weight, score, bias = null;
      if (state.head === "mean") {
        weight = mean(view.weights[index]);
        score = mean(view.scores[index]);
        if (view.biases) { bias = mean(view.biases[index]); }
      } else {
        weight = view.weights[index][Number(state.head)];
        score = view.scores[index][Number(state.head)];
        if (view.biases) { bias = view.biases[index][Number(state.head)]; }
      }
      return { index: index, source: pair[0], target: pair[1], weight: weight, score: score, bias: bias };
    });
    return edges.sort(function (a, b) { return a.weight - b.weight || a.index - b.index; });
  }

  function tokensOf(side) { return data.tokens[side]; }

  function prediction(side, node) {
    var p = data.predictions;
    return p && p.side === side ? p.labels[node] : null;
  }

  /* ---- layouts: node positions {x, y} for keys and queries ---- */

  function textWidth(label) { return Math.max(28, 7.2 * String(label).length + 16); }

  /* Tokens on a row, each as wide as its label; few tokens spread out, many sit close. */
  function lineLayout(labels, y, left) {
    var widths = labels.map(textWidth), total = widths.reduce(function (a, b) { return a + b; }, 0);
    var gap = labels.length > 1 ? Math.max(12, Math.min(90, (560 - total) / (labels.length - 1))) : 0;
    var x = left;
    return labels.map(function (label, k) {
      var node = { x: x + widths[k] / 2, y: y, w: widths[k] };
      x += widths[k] + gap;
      return node;
    });
  }

  function rowWidth(nodes) { var last = nodes[nodes.length - 1]; return last.x + last.w / 2 - nodes[0].x + nodes[0].w / 2; }

  function arcReach(distance) { return Math.min(10 + 0.34 * distance, 170); }

  function layoutSelf(view) {
    var labels = tokensOf(view.keys);
    if (data.layout === "grid" && data.grid) { return layoutGrid(labels); }
    if (data.layout === "circle") { return layoutCircle(labels); }
    var nodes = lineLayout(labels, 0, 20);
    var reach = function (above) {  // the highest arc above (earlier keys) or below (later keys) the line
      return view.edges.reduce(function (most, e) {
        return (e[0] < e[1]) === above ? Math.max(most, arcReach(Math.abs(nodes[e[1]].x - nodes[e[0]].x))) : most;
      }, 0);
    };
    var up = Math.max(reach(true), 34), down = reach(false);
    nodes.forEach(function (node) { node.y = 16 + up; });
    return { keys: nodes, queries: nodes, width: rowWidth(nodes) + 40, height: 16 + up + down + 24,
             shape: "pill", curve: "arc" };
  }

  function layoutGrid(labels) {
    var rows = data.grid[0], cols = data.grid[1], text = data.text_length, step = 74, left = 40;
    var top = text > 0 ? 110 : 40;
    var nodes = labels.map(function (label, k) {
      if (k < text) { return { x: left + k * step, y: 40, w: 26 }; }
      var pixel = k - text;
      return { x: left + (pixel % cols) * step, y: top + Math.floor(pixel / cols) * step, w: 26 };
    });
    var width = left * 2 + (Math.max(cols, text) - 1) * step;
    return { keys: nodes, queries: nodes, width: width, height: top + (rows - 1) * step + 40,
             shape: "circle", curve: "bend" };
  }

  /* Tokens on a ring, in order, clockwise from the top; the centre tokens (a star's relay) in the middle. */
  function layoutCircle(labels) {
    var centre = data.center || [], ring = labels.length - centre.length;
    var radius = Math.max(110, 34 * ring / (2 * Math.PI)), middle = radius + 40, k = 0;
    var nodes = labels.map(function (label, index) {
      if (centre.indexOf(index) >= 0) { return { x: middle, y: middle, w: 26 }; }
      var angle = 2 * Math.PI * (k++) / ring - Math.PI / 2;
      return { x: middle + radius * Math.cos(angle), y: middle + radius * Math.sin(angle), w: 26 };
    });
    return { keys: nodes, queries: nodes, width: 2 * middle, height: 2 * middle, shape: "circle", curve: "bend" };
  }

  function layoutCross(view) {
    var keys = lineLayout(tokensOf(view.keys), 46, 0), queries = lineLayout(tokensOf(view.queries), 0, 0);
    var width = Math.max(rowWidth(keys), rowWidth(queries)) + 40;
    var depth = Math.max(170, 14 * Math.max(keys.length, queries.length));
    [[keys, rowWidth(keys)], [queries, rowWidth(queries)]].forEach(function (row) {  // centre both rows
      var shift = (width - row[1]) / 2 - (row[0][0].x - row[0][0].w / 2);
      row[0].forEach(function (node) { node.x += shift; });
    });
    queries.forEach(function (node) { node.y = 46 + depth; });
    return { keys: keys, queries: queries, width: width, height: 46 + depth + 46, shape: "pill", curve: "straight" };
  }

  /* ---- edge geometry ---- */

  function edgePath(layout, edge) {
    var a = layout.keys[edge.source], b = layout.queries[edge.target];
    if (layout.curve === "straight") {
      var y0 = a.y + 12, y1 = b.y - 12, mid = (y0 + y1) / 2;
      return "M" + a.x + "," + y0 + " C" + a.x + "," + mid + " " + b.x + "," + mid + " " + b.x + "," + y1;
    }
    if (edge.source === edge.target) {  // a token attending to itself: a small loop on top
      var top = a.y - (layout.shape === "pill" ? 11 : 13);
      return "M" + (a.x - 6) + "," + top + " C" + (a.x - 18) + "," + (top - 30) + " " + (a.x + 18) + "," +
        (top - 30) + " " + (a.x + 6) + "," + top;
    }
    if (layout.curve === "arc") {  // earlier keys above the line, later keys below
      var above = edge.source < edge.target, sign = above ? -1 : 1;
      var ya = a.y + sign * 11, reach = arcReach(Math.abs(b.x - a.x));
      var c = ya + sign * reach * 4 / 3;
      return "M" + a.x + "," + ya + " C" + a.x + "," + c + " " + b.x + "," + c + " " + b.x + "," + ya;
    }
    var dx = b.x - a.x, dy = b.y - a.y, length = Math.sqrt(dx * dx + dy * dy);  // bend to the right of travel
    var ux = dx / length, uy = dy / length, r = 14;
    var sx = a.x + ux * r, sy = a.y + uy * r, ex = b.x - ux * r, ey = b.y - uy * r;
    var cx = (a.x + b.x) / 2 - dy * 0.16, cy = (a.y + b.y) / 2 + dx * 0.16;
    return "M" + sx + "," + sy + " Q" + cx + "," + cy + " " + ex + "," + ey;
  }

  /* ---- tooltip ---- */

  function showTip(html, event) {
    tooltip.innerHTML = html;
    tooltip.hidden = false;
    moveTip(event);
  }

  function moveTip(event) {
    var x = event.clientX + 14, y = event.clientY + 14;
    var box = tooltip.getBoundingClientRect();
    if (x + box.width > window.innerWidth - 8) { x = event.clientX - box.width - 14; }
    if (y + box.height > window.innerHeight - 8) { y = event.clientY - box.height - 14; }
    tooltip.style.left = Math.max(4, x) + "px";
    tooltip.style.top = Math.max(4, y) + "px";
  }

  function hideTip() { tooltip.hidden = true; }

  function headName() {
    return state.head === "mean" ? "mean of heads" : "head " + (Number(state.head) + 1);
  }

  function edgeTip(view, edge) {
    var source = tokensOf(view.keys)[edge.source], target = tokensOf(view.queries)[edge.target];
    var predicted = prediction(view.queries, edge.target);
    return '<div class="tip-title">' + escapeText(source) + " \u2192 " + escapeText(target) + "</div>" +
      '<div class="tip-note">key j = ' + edge.source + " \u2192 query i = " + edge.target + ", " + headName() +
      "</div><table>" +
      '<tr><td>score s<sub>ij</sub></td><td class="tip-score">' + format(edge.score) + "</td></tr>" +
      (view.biases ? '<tr><td>bias b<sub>ij</sub></td><td class="tip-bias">' + format(edge.bias) + "</td></tr>" : "") +
      '<tr><td>weight \u03b1<sub>ij</sub></td><td class="tip-weight">' + format(edge.weight) + "</td></tr>" +
      "</table>" + (predicted === null ? "" : '<div class="tip-note">' + escapeText(target) + " predicts " +
      escapeText(predicted) + "</div>");
  }

  function nodeTip(view, node, edges) {
    var incoming = edges.filter(function (e) { return e.target === node; })
      .sort(function (a, b) { return b.weight - a.weight; });
    var keys = tokensOf(view.keys), label = tokensOf(view.queries)[node];
    var rows = incoming.slice(0, 10).map(function (e) {
      return "<tr><td>" + escapeText(keys[e.source]) + " (" + e.source + ")</td><td>" + format(e.weight) + "</td></tr>";
    }).join("");
    var more = incoming.length > 10 ? '<div class="tip-note">and ' + (incoming.length - 10) + " more</div>" : "";
    var predicted = prediction(view.queries, node);
    return '<div class="tip-title">' + escapeText(label) + " (" + node + ") attends to</div>" +
      (incoming.length ? "<table>" + rows + "</table>" + more : '<div class="tip-note">no token: no in-edge</div>') +
      (predicted === null ? "" : '<div class="tip-note">and predicts the next token: ' + escapeText(predicted) +
      "</div>");
  }

  /* ---- drawing ---- */

  function focus(svg, predicate) {
    svg.classList.add("focus");
    svg.querySelectorAll(".edge").forEach(function (path) {
      path.classList.toggle("active", predicate(Number(path.dataset.source), Number(path.dataset.target)));
    });
  }

  function unfocus() {
    document.querySelectorAll(".active").forEach(function (e) { e.classList.remove("active"); });
    byId("graph").classList.remove("focus");
    hideTip();
  }

  function activateCell(source, target) {
    var cell = byId("heatmap").querySelector('.cell[data-source="' + source + '"][data-target="' + target + '"]');
    if (cell) { cell.classList.add("active"); }
  }

  function drawNode(group, position, label, role, index) {
    var node = make("g", { "class": "node " + role, "data-index": index, "data-role": role }, group);
    if (position.w === 26) {
      make("circle", { cx: position.x, cy: position.y, r: 13 }, node);
    } else {
      make("rect", { x: position.x - position.w / 2, y: position.y - 11, width: position.w, height: 22, rx: 11 }, node);
    }
    make("text", { x: position.x, y: position.y }, node).textContent = label;
    return node;
  }

  function drawGraph(view, edges) {
    var svg = byId("graph");
    clear(svg);
    var layout = view.kind === "cross" ? layoutCross(view) : layoutSelf(view);
    svg.setAttribute("viewBox", "0 0 " + layout.width + " " + layout.height);
    svg.setAttribute("width", layout.width);
    svg.setAttribute("height", layout.height);
    var drawn = make("g", { id: "edges" }, svg), hits = make("g", { id: "edge-hits" }, svg);
    var nodes = make("g", { id: "nodes" }, svg);
    edges.forEach(function (edge) {
      var d = edgePath(layout, edge);
      var path = make("path", {
        "class": "edge", d: d, "data-source": edge.source, "data-target": edge.target,
        "data-weight": edge.weight, "data-score": edge.score === null ? "-Infinity" : edge.score,
        "stroke-width": ENCODING.minWidth + ENCODING.widthPerWeight * edge.weight,
        "stroke-opacity": ENCODING.minOpacity + ENCODING.opacityPerWeight * edge.weight
      }, drawn);
      if (view.biases) { path.dataset.bias = edge.bias === null ? "-Infinity" : edge.bias; }
      var hit = make("path", { "class": "edge-hit", d: d, "data-source": edge.source, "data-target": edge.target }, hits);
      hit.addEventListener("mouseenter", function (event) {
        focus(svg, function (j, i) { return j === edge.source && i === edge.target; });
        activateCell(edge.source, edge.target);
        showTip(edgeTip(view, edge), event);
      });
      hit.addEventListener("mousemove", moveTip);
      hit.addEventListener("mouseleave", unfocus);
    });
    if (view.kind === "cross") {
      make("text", { "class": "axis-label", x: 4, y: layout.keys[0].y - 24 }, svg).textContent = "source (keys)";
      make("text", { "class": "axis-label", x: 4, y: layout.queries[0].y + 32 }, svg).textContent = "target (queries)";
    }
    var sides = layout.keys === layout.queries ? [["queries", layout.queries]] :
      [["keys", layout.keys], ["queries", layout.queries]];
    sides.forEach(function (side) {
      var labels = tokensOf(view[side[0]]);
      side[1].forEach(function (position, k) {
        var node = drawNode(nodes, position, labels[k], side[0] === "keys" ? "key" : "query", k);
        node.addEventListener("mouseenter", function (event) {
          node.classList.add("active");
          if (side[0] === "keys") {
            focus(svg, function (j) { return j === k; });
            showTip('<div class="tip-title">' + escapeText(labels[k]) + " (" + k + ")</div>" +
              '<div class="tip-note">a source token: its edges go to the targets that read it</div>', event);
          } else {
            focus(svg, function (j, i) { return i === k; });
            byId("heatmap").querySelectorAll('.tick[data-row="' + k + '"]').forEach(function (t) {
              t.classList.add("active");
            });
            showTip(nodeTip(view, k, edges), event);
          }
        });
        node.addEventListener("mousemove", moveTip);
        node.addEventListener("mouseleave", unfocus);
      });
    });
  }

  function drawHeatmap(view, edges) {
    var svg = byId("heatmap");
    clear(svg);
    var keys = tokensOf(view.keys), queries = tokensOf(view.queries);
    var size = Math.max(12, Math.min(38, Math.floor(320 / Math.max(keys.length, queries.length))));
    var widest = function (labels) { return Math.max.apply(null, labels.map(function (l) { return String(l).length; })); };
    var left = 16 + 7 * widest(queries), top = 16 + 5.2 * widest(keys);
    var width = left + size * keys.length + 12, height = top + size * queries.length + 10;
    svg.setAttribute("viewBox", "0 0 " + width + " " + height);
    svg.setAttribute("width", width);
    svg.setAttribute("height", height);
    var defs = make("defs", {}, svg);
    var hatch = make("pattern", { id: "absent", width: 6, height: 6, patternUnits: "userSpaceOnUse",
                                  patternTransform: "rotate(45)" }, defs);
    make("rect", { width: 6, height: 6, fill: "#f3f4f6" }, hatch);
    make("line", { x1: 0, y1: 0, x2: 0, y2: 6, stroke: "#d1d5db", "stroke-width": 2 }, hatch);
    var present = {};
    edges.forEach(function (e) { present[e.target + "," + e.source] = e; });
    var cells = make("g", {}, svg);
    queries.forEach(function (_, i) {
      keys.forEach(function (_, j) {
        var edge = present[i + "," + j], x = left + j * size, y = top + i * size;
        if (!edge) {
          make("rect", { "class": "cell absent", x: x, y: y, width: size, height: size, fill: "url(#absent)",
                         "data-source": j, "data-target": i }, cells);
          return;
        }
        var cell = make("rect", { "class": "cell", x: x, y: y, width: size, height: size, fill: blues(edge.weight),
                                  "data-source": j, "data-target": i, "data-weight": edge.weight }, cells);
        if (size >= 26) {
          make("text", { "class": "cell-value", x: x + size / 2, y: y + size / 2,
                         fill: edge.weight > 0.55 ? "#fff" : "#1f2937" }, cells).textContent = edge.weight.toFixed(2);
        }
        cell.addEventListener("mouseenter", function (event) {
          cell.classList.add("active");
          focus(byId("graph"), function (s, t) { return s === j && t === i; });
          showTip(edgeTip(view, edge), event);
        });
        cell.addEventListener("mousemove", moveTip);
        cell.addEventListener("mouseleave", unfocus);
      });
    });
    keys.forEach(function (label, j) {
      var x = left + j * size + size / 2, y = top - 6;
      make("text", { "class": "tick", x: x, y: y, transform: "rotate(-50 " + x + " " + y + ")", "data-column": j },
           svg).textContent = label;
    });
    queries.forEach(function (label, i) {
      make("text", { "class": "tick", x: left - 6, y: top + i * size + size / 2, "text-anchor": "end",
                     "dominant-baseline": "central", "data-row": i }, svg).textContent = label;
    });
  }

  function caption(view) {
    var line = "<b>Edge j \u2192 i:</b> token i (the query) attends to token j (the key); the weights into each " +
      "token sum to 1. Width and opacity of an edge show its weight \u03b1<sub>ij</sub>.";
    if (view.kind === "cross") {
      line = "<b>Edge j \u2192 i:</b> target token i (a decoder query, bottom row) attends to source token j " +
        "(an encoder output, top row); the weights into each target sum to 1. Width and opacity show the weight.";
    } else if (data.layout === "grid" && data.grid) {
      line += " Text tokens first (top row), then the image in raster order; each curve bends to the right of " +
        "its direction j \u2192 i.";
    } else if (data.layout === "circle") {
      line += " Tokens sit on a ring in order" + ((data.center || []).length ? ", the relay in the middle" : "") +
        "; each curve bends to the right of its direction j \u2192 i.";
    } else {
      line += " Arcs above the tokens come from earlier tokens, arcs below from later ones; a loop is a token " +
        "attending to itself.";
    }
    return line;
  }

  function render() {
    var view = currentView();
    var edges = edgesOf(view);
    unfocus();
    drawGraph(view, edges);
    drawHeatmap(view, edges);
    byId("caption").innerHTML = caption(view);
    var layers = viewsOf(state.kind).length;
    byId("summary").textContent = kindLabel(state.kind) + " \u00b7 layer " + (state.layer + 1) + " of " + layers +
      " \u00b7 " + headName() + " of " + view.heads + " \u00b7 " + view.edges.length + " edges";
    byId("graph-legend").textContent = tokensOf(view.keys).length + " key tokens, " +
      tokensOf(view.queries).length + " query tokens. Hover an edge for its score and weight, a token for " +
      "what it attends to." + (view.biases ? " Every edge also carries a score bias b_ij from the positions of its " +
      "ends (a relative position bias), added to q_i \u00b7 k_j: an edge feature, shown on hover." : "");
    byId("heatmap-legend").innerHTML = 'Colour: weight from 0 (white) to 1 (dark blue); hatched: no edge, ' +
      "the query does not see that key.";
    var graph = byId("graph");
    graph.dataset.kind = state.kind;
    graph.dataset.layer = state.layer;
    graph.dataset.head = state.head;
  }

  function options(select, items, chosen) {
    select.innerHTML = "";
    items.forEach(function (item) {
      var option = document.createElement("option");
      option.value = item[0];
      option.textContent = item[1];
      select.appendChild(option);
    });
    select.value = chosen;
  }

  function fillControls() {
    var layers = viewsOf(state.kind).map(function (v) { return v.layer; });
    if (layers.indexOf(state.layer) < 0) { state.layer = layers[0]; }
    // option values count from 1 like their labels, so that a value never names another option's label
    options(byId("layer"), layers.map(function (l) { return [String(l + 1), String(l + 1)]; }), String(state.layer + 1));
    var heads = currentView().heads, items = [];
    for (var h = 0; h < heads; h += 1) { items.push([String(h + 1), String(h + 1)]); }
    items.push(["mean", "mean of heads"]);
    if (state.head !== "mean" && Number(state.head) >= heads) { state.head = "0"; }
    options(byId("head"), items, state.head === "mean" ? "mean" : String(Number(state.head) + 1));
  }

  options(byId("kind"), data.kinds.map(function (k) { return [k.kind, k.label]; }), state.kind);
  byId("kind").addEventListener("change", function (event) {
    state.kind = event.target.value;
    fillControls();
    render();
  });
  byId("layer").addEventListener("change", function (event) {
    state.layer = Number(event.target.value) - 1;
    fillControls();
    render();
  });
  byId("head").addEventListener("change", function (event) {
    state.head = event.target.value === "mean" ? "mean" : String(Number(event.target.value) - 1);
    render();
  });
  function drawPonder() {  // the ponder map: one cell per token, darker for more steps
    var ponder = data.ponder;
    if (!ponder) { return; }
    var panel = byId("ponder"), table = make("table", { "class": "ponder" }, panel);
    [["source", "source"], ["target", "target"]].forEach(function (side) {
      var labels = tokensOf(side[0]), steps = ponder[side[0]];
      if (!labels.length) { return; }
      var row = make("tr", {}, table);
      make("th", {}, row).textContent = side[1];
      labels.forEach(function (label, k) {
        var cell = make("td", { "class": "ponder-cell", "data-side": side[0], "data-index": k,
          "data-steps": steps[k], style: "background:" + blues(steps[k] / ponder.max_steps) +
          (steps[k] / ponder.max_steps > 0.6 ? ";color:#fff" : "") }, row);
        cell.textContent = label + " " + steps[k];
        cell.title = label + " (" + k + "): " + steps[k] + " of at most " + ponder.max_steps + " steps";
      });
    });
    byId("ponder-panel").hidden = false;
  }

  fillControls();
  render();
  drawPonder();
  window.gnnExplorer = { data: data, state: state, encoding: ENCODING, render: render };
})();
