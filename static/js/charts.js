// PulseGuard charts: uPlot (static/vendor) over the metrics query API, appended live.
//
// <div data-chart data-src="/api/v1/metrics/query?metric=host.cpu_percent&..." data-unit="percent"
//      data-title="CPU busy" data-labels="Used|Installed~" data-style="bars" data-refresh="60">
//
// data-src holds one or more query URLs (space-separated) drawn together on one time
// axis; each answer may hold several series (one per agent or GPU). data-labels names
// the sources ("~" marks a reference line, drawn dashed). A live frame carries
// #telemetry-feed (data-ts, data-values {"host.cpu_percent": 41.5,
// "DCGM_FI_DEV_GPU_UTIL/0": 90, ...}); each chart appends the values whose keys match its
// series and drops points older than its window. data-refresh re-reads the sources every
// so many seconds, the window sliding to now.
(function () {
  "use strict";

  // Neighbours differ in hue and lightness, so eight GPUs stay apart.
  var PALETTE = ["#4f46e5", "#f59e0b", "#0d9488", "#e11d48", "#0ea5e9", "#84cc16", "#a855f7", "#ea580c", "#64748b", "#db2777",
    "#15803d", "#92400e"];
  var REFERENCE = "#94a3b8";
  var HEIGHT = 200;
  var FONT = '11px ui-sans-serif, system-ui, -apple-system, "Segoe UI", Roboto, Arial, sans-serif';
  var charts = [];

  // --- numbers as operators read them ----------------------------------------------------
  var BIN = ["B", "KiB", "MiB", "GiB", "TiB", "PiB"];
  function bytes(v) {
    if (v == null) return "—";
    var i = 0, a = Math.abs(v);
    while (a >= 1024 && i < BIN.length - 1) { a /= 1024; v /= 1024; i++; }
    return (i === 0 || Math.abs(v) >= 10 ? Math.round(v) : v.toFixed(1)) + " " + BIN[i];
  }
  function compact(v) {
    if (v == null) return "—";
    var a = Math.abs(v);
    if (a >= 1e9) return trim(v / 1e9) + "B";
    if (a >= 1e6) return trim(v / 1e6) + "M";
    if (a >= 1e3) return trim(v / 1e3) + "k";
    return trim(v);
  }
  function trim(v) {
    var a = Math.abs(v);
    var s = a >= 100 || v === Math.round(v) ? Math.round(v).toString() : a >= 10 ? v.toFixed(1) : v.toFixed(2);
    return s.indexOf(".") >= 0 ? s.replace(/\.?0+$/, "") : s;
  }
  function money(v) {
    if (v == null) return "—";
    var a = Math.abs(v);
    if (a >= 1000) return "$" + Math.round(v).toLocaleString("en-US");
    if (a >= 0.01 || v === 0) return "$" + v.toFixed(2);
    return "$" + v.toFixed(a >= 0.001 ? 3 : 4);
  }
  function ms(v) { return v == null ? "—" : Math.abs(v) >= 1000 ? trim(v / 1000) + " s" : Math.round(v) + " ms"; }

  // Powers of two, so a bytes axis ticks at 16 GiB, 32 GiB, ... rather than 17.2 GB.
  var BIN_INCRS = [];
  for (var e = 0; e < 60; e++) BIN_INCRS.push(Math.pow(2, e));

  var UNITS = {
    percent: { fmt: function (v) { return v == null ? "—" : trim(v) + "%"; }, range: [0, 100] },
    bytes: { fmt: bytes, incrs: BIN_INCRS },
    "bytes/s": { fmt: function (v) { return v == null ? "—" : bytes(v) + "/s"; }, incrs: BIN_INCRS },
    celsius: { fmt: function (v) { return v == null ? "—" : Math.round(v) + " °C"; }, soft: true },
    watts: { fmt: function (v) { return v == null ? "—" : Math.abs(v) >= 10000 ? trim(v / 1000) + " kW" : Math.round(v) + " W"; } },
    USD: { fmt: money },
    tokens: { fmt: compact, tip: function (v) { return v == null ? "—" : Math.round(v).toLocaleString("en-US") + " tokens"; } },
    calls: { fmt: compact, tip: function (v) { return v == null ? "—" : Math.round(v).toLocaleString("en-US"); } },
    ms: { fmt: ms },
    MHz: { fmt: function (v) { return v == null ? "—" : Math.round(v) + " MHz"; } },
    "": { fmt: function (v) { return v == null ? "—" : trim(v); } }
  };
  function unitOf(name) { return UNITS[name] || UNITS[""]; }

  // --- DOM -------------------------------------------------------------------------------
  function el(tag, cls, text) {
    var n = document.createElement(tag);
    if (cls) n.className = cls;
    if (text != null) n.textContent = text;
    return n;
  }

  function setup(node) {
    var c = {
      node: node,
      srcs: (node.dataset.src || "").split(/\s+/).filter(Boolean),
      labels: (node.dataset.labels || "").split("|"),
      unit: node.dataset.unit || "",
      style: node.dataset.style || "line",
      live: node.dataset.live !== "false",
      created: Date.now(),
      u: null, data: null, keys: [], counts: [], lastTs: null, step: 60, window: 3600, timer: null
    };
    node.classList.add("chart");
    node.innerHTML = "";
    if (node.dataset.title) {
      var head = el("div", "chart-head");
      head.appendChild(el("h3", "chart-title", node.dataset.title));
      c.nowEl = head.appendChild(el("span", "chart-now"));
      node.appendChild(head);
    }
    c.plot = node.appendChild(el("div", "chart-plot"));
    c.msg = node.appendChild(el("div", "chart-msg", "Loading…"));
    node.setAttribute("role", "img");
    node.setAttribute("aria-label", node.dataset.title || "chart");
    state(c, "loading");
    if (window.ResizeObserver) {
      c.ro = new ResizeObserver(function () { if (c.u) c.u.setSize(size(c)); });
      c.ro.observe(c.plot);
    }
    var every = parseInt(node.dataset.refresh || "0", 10);
    if (every > 0) c.timer = setInterval(function () { load(c, true); }, every * 1000);
    node._pgChart = c;
    charts.push(c);
    load(c, false);
  }

  function state(c, s, message) {
    c.node.dataset.state = s;
    c.msg.hidden = s === "ready";
    c.plot.hidden = s !== "ready";
    if (message != null) c.msg.textContent = message;
  }

  function size(c) {
    return { width: Math.max(200, Math.floor(c.plot.clientWidth || c.node.clientWidth || 400)), height: parseInt(c.node.dataset.height || HEIGHT, 10) };
  }

  // --- data ------------------------------------------------------------------------------
  function srcUrls(c, slide) {
    if (!slide) return c.srcs;
    // Same window length, ending now.
    var shift = Date.now() - c.created;
    return c.srcs.map(function (src) {
      var url = new URL(src, window.location.href);
      ["from", "to"].forEach(function (k) {
        var v = url.searchParams.get(k);
        if (v) url.searchParams.set(k, new Date(new Date(v).getTime() + shift).toISOString());
      });
      return url.pathname + url.search;
    });
  }

  function load(c, slide) {
    Promise.all(srcUrls(c, slide).map(function (src) {
      return fetch(src, { credentials: "same-origin", headers: { Accept: "application/json" } }).then(function (r) {
        if (!r.ok) throw new Error(r.status === 403 ? "Not allowed to read these metrics." : "Could not load this chart (" + r.status + ").");
        return r.json();
      });
    })).then(function (answers) {
      if (c.node.isConnected) build(c, answers);
    }).catch(function (err) {
      if (!c.u) state(c, "error", err.message || "Could not load this chart.");
    });
  }

  function seriesKey(metric, agg, device) {
    var key = metric;
    if (agg && agg !== "avg" && agg !== "sum") key += ":" + agg;
    if (device != null) key += "/" + device;
    return key;
  }

  function aggOf(key) {
    var m = /:(\w+)(\/|$)/.exec(key);
    return m ? m[1] : null;
  }

  function build(c, answers) {
    var first = answers[0];
    c.step = first.step;
    c.window = (Date.parse(first.to) - Date.parse(first.from)) / 1000;
    c.sum = answers.every(function (a) { return a.agg === "sum"; });
    c.metrics = answers.map(function (a, i) {
      var agg = new URL(c.srcs[i], window.location.href).searchParams.get("agg");
      return { name: a.metric, key: seriesKey(a.metric, agg, null), label: c.labels[i] || "" };
    });
    var agents = {};
    answers.forEach(function (a) { a.series.forEach(function (s) { if (s.agent) agents[s.agent] = 1; }); });
    var manyAgents = Object.keys(agents).length > 1;

    var xs = {}, specs = [];
    answers.forEach(function (a, i) {
      a.series.forEach(function (s) {
        var values = {};
        s.points.forEach(function (p) { xs[p[0]] = 1; values[p[0]] = p[1]; });
        specs.push({ key: seriesKey(a.metric, c.metrics[i].key.split(":")[1], s.device), label: labelFor(c.metrics[i].label, s, manyAgents), values: values });
      });
    });
    var x = Object.keys(xs).map(Number).sort(function (a, b) { return a - b; });
    var data = [x].concat(specs.map(function (s) { return x.map(function (t) { return s.values[t] === undefined ? null : s.values[t]; }); }));
    var any = data.slice(1).some(function (ys) { return ys.some(function (v) { return v != null; }); });
    if (!any && !c.u) {
      // Nothing yet: a live point may still start the chart (see append).
      c.keys = [];
      c.data = null;
      state(c, "empty", c.node.dataset.empty || "No data in this range yet.");
      points(c);
      return;
    }
    var keys = specs.map(function (s) { return s.key; });
    var sameShape = c.u && keys.join() === c.keys.join();
    c.keys = keys;
    c.counts = keys.map(function () { return 0; });
    c.data = data;
    c.lastTs = null;
    if (sameShape) c.u.setData(view(c));
    else draw(c, specs.map(function (s) { return s.label; }));
  }

  function labelFor(srcLabel, s, manyAgents) {
    var parts = [];
    if (srcLabel) parts.push(srcLabel.replace(/~$/, ""));
    if (manyAgents && s.agent_name) parts.push(s.agent_name);
    if (s.device != null) parts.push("GPU " + s.device);
    if (!parts.length) parts.push(s.agent ? s.agent_name : "Fleet");
    return { text: parts.join(" · "), reference: /~$/.test(srcLabel || "") };
  }

  // Short holes (a sample that missed its bucket) are bridged; longer silences stay gaps.
  function view(c) {
    return c.data.map(function (ys, i) {
      if (i === 0) return ys.slice();
      var out = ys.slice(), n = out.length;
      for (var j = 0; j < n; j++) {
        if (out[j] !== null) continue;
        var k = j;
        while (k < n && out[k] === null) k++;
        if (j > 0 && k < n && k - j <= 2) for (var m = j; m < k; m++) out[m] = undefined;
        j = k;
      }
      return out;
    });
  }

  // --- drawing ---------------------------------------------------------------------------
  function axisSize(self, values, axisIdx, cycleNum) {
    var axis = self.axes[axisIdx];
    if (cycleNum > 1) return axis._size;
    var size = axis.ticks.size + axis.gap;
    var longest = (values || []).reduce(function (a, v) { return v && v.length > a.length ? v : a; }, "");
    if (longest) { self.ctx.font = axis.font[0]; size += self.ctx.measureText(longest).width / devicePixelRatio; }
    return Math.ceil(size) + 2;
  }

  function draw(c, labels) {
    if (c.u) { c.u.destroy(); c.u = null; }
    var unit = unitOf(c.unit);
    var bars = c.style === "bars" && window.uPlot.paths && window.uPlot.paths.bars;
    var single = labels.length === 1;
    var colour = 0;
    var series = [{ value: function (u, v) { return v == null ? "—" : new Date(v * 1000).toLocaleString([], { month: "short", day: "numeric", hour: "2-digit", minute: "2-digit" }); } }];
    labels.forEach(function (l) {
      var stroke = l.reference ? REFERENCE : PALETTE[colour++ % PALETTE.length];
      var s = {
        label: l.text, stroke: stroke, width: l.reference ? 1.25 : 1.75, dash: l.reference ? [5, 4] : undefined,
        value: function (u, v) { return (unit.tip || unit.fmt)(v); },
        points: { size: 5, width: 1.5 }
      };
      if (bars) {
        s.paths = window.uPlot.paths.bars({ size: [0.72, 48], align: 1 });
        s.fill = stroke + "cc";
        s.width = 0;
        s.points = { show: false };
      } else if (single) {
        s.fill = stroke + "14";
      }
      series.push(s);
    });
    var y = {};
    if (unit.range) y.range = unit.range;
    else if (unit.soft) y.range = function (u, min, max) { return [Math.max(0, Math.floor((min - 5) / 10) * 10), Math.ceil((max + 5) / 10) * 10]; };
    else y.range = function (u, min, max) { return [0, max > 0 ? max * 1.12 : 1]; };
    var scales = { y: y };
    if (bars) scales.x = { time: true, range: function (u, min, max) { return [min, max + c.step]; } };
    var opts = Object.assign(size(c), {
      class: "pg-uplot",
      legend: { show: !single, live: true },
      cursor: { drag: { x: true, y: false }, points: { size: 7 } },
      scales: scales,
      series: series,
      axes: [
        { font: FONT, stroke: "#6b7280", grid: { stroke: "#f1f5f9", width: 1 }, ticks: { stroke: "#e5e7eb", width: 1, size: 4 } },
        {
          font: FONT, stroke: "#6b7280", grid: { stroke: "#eef0f4", width: 1 }, ticks: { show: false }, gap: 6,
          size: axisSize, incrs: unit.incrs, values: function (u, splits) { return splits.map(function (v) { return unit.fmt(v); }); }
        }
      ],
      plugins: [tooltip(c)]
    });
    state(c, "ready");
    c.u = new window.uPlot(opts, view(c), c.plot);
    points(c);
  }

  // A tooltip by the cursor: time, then each visible series' value (text only: names come from agents).
  function tooltip(c) {
    var tip;
    return {
      hooks: {
        init: function (u) {
          tip = el("div", "chart-tip");
          tip.hidden = true;
          u.over.appendChild(tip);
          u.over.addEventListener("mouseleave", function () { tip.hidden = true; });
        },
        setCursor: function (u) {
          var i = u.cursor.idx;
          if (i == null || u.cursor.left < 0) { tip.hidden = true; return; }
          tip.textContent = "";
          tip.appendChild(el("div", "chart-tip-time", u.series[0].value(u, u.data[0][i])));
          var shown = 0;
          for (var s = 1; s < u.series.length; s++) {
            var v = u.data[s][i];
            if (!u.series[s].show || v == null) continue;
            var row = el("div", "chart-tip-row");
            var dot = el("span", "chart-tip-dot");
            dot.style.background = u.series[s]._stroke || u.series[s].stroke;
            row.appendChild(dot);
            row.appendChild(el("span", "chart-tip-label", u.series[s].label));
            row.appendChild(el("strong", null, u.series[s].value(u, v)));
            tip.appendChild(row);
            shown++;
          }
          if (!shown) tip.appendChild(el("div", "chart-tip-row muted", "no data"));
          tip.hidden = false;
          var w = tip.offsetWidth, h = tip.offsetHeight, W = u.over.clientWidth, H = u.over.clientHeight;
          var left = u.cursor.left + 14, top = u.cursor.top + 14;
          if (left + w > W) left = u.cursor.left - w - 14;
          if (top + h > H) top = Math.max(0, H - h);
          tip.style.transform = "translate(" + Math.max(0, left) + "px," + top + "px)";
        }
      }
    };
  }

  // How many values the chart holds, and the latest one by its title (read by tests too).
  function points(c) {
    var n = 0, latest = null;
    if (c.data) {
      for (var i = 1; i < c.data.length; i++) {
        for (var j = 0; j < c.data[i].length; j++) if (c.data[i][j] != null) n++;
      }
      if (c.keys.length === 1) {
        var ys = c.data[1];
        for (var k = ys.length - 1; k >= 0; k--) if (ys[k] != null) { latest = ys[k]; break; }
      }
    }
    c.node.dataset.points = n;
    if (c.nowEl) c.nowEl.textContent = latest != null && !c.sum ? unitOf(c.unit).fmt(latest) : "";
  }

  // --- live points -----------------------------------------------------------------------
  function feed(node) {
    if (!node) return;
    var ts = parseFloat(node.dataset.ts), values;
    try { values = JSON.parse(node.dataset.values || "{}"); } catch (e) { return; }
    if (!isFinite(ts)) return;
    charts.forEach(function (c) { if (c.node.isConnected) append(c, ts, values); });
  }

  function append(c, ts, values) {
    if (!c.live || c.sum || !c.metrics) return;
    if (c.lastTs != null && ts <= c.lastTs) return; // the same reading in another frame
    if (!c.data) {
      // An empty chart starts with the first matching reading.
      var keys = [], labels = [];
      c.metrics.forEach(function (m) {
        Object.keys(values).sort().forEach(function (k) {
          var device = k.indexOf(m.key + "/") === 0 ? k.slice(m.key.length + 1) : null;
          if (k === m.key || (device !== null && /^\d+$/.test(device))) {
            keys.push(k);
            labels.push(labelFor(m.label, { device: device, agent: null, agent_name: "" }, false));
          }
        });
      });
      if (!keys.length) return;
      c.keys = keys;
      c.counts = keys.map(function () { return 0; });
      c.data = [[]].concat(keys.map(function () { return []; }));
      c.pendingLabels = labels;
    }
    var vals = c.keys.map(function (k) { var v = values[k]; return typeof v === "number" && isFinite(v) ? v : null; });
    if (vals.every(function (v) { return v == null; })) return;
    c.lastTs = ts;
    var b = Math.floor(ts / c.step) * c.step, d = c.data, xs = d[0], n = xs.length;
    if (n && b === xs[n - 1]) {
      // The bucket of the newest point: what fell in it, combined as the series does
      // (the highest for a :max series, the lowest for :min, else a running mean).
      vals.forEach(function (v, i) {
        if (v == null) return;
        var old = d[i + 1][n - 1], cnt = c.counts[i] || (old == null ? 0 : 1), agg = aggOf(c.keys[i]);
        if (old == null) d[i + 1][n - 1] = v;
        else if (agg === "max") d[i + 1][n - 1] = Math.max(old, v);
        else if (agg === "min") d[i + 1][n - 1] = Math.min(old, v);
        else d[i + 1][n - 1] = (old * cnt + v) / (cnt + 1);
        c.counts[i] = cnt + 1;
      });
    } else if (!n || b > xs[n - 1]) {
      xs.push(b);
      vals.forEach(function (v, i) { d[i + 1].push(v); });
      c.counts = vals.map(function (v) { return v == null ? 0 : 1; });
    } else {
      return;
    }
    var lo = b - c.window;
    var drop = 0;
    while (drop < xs.length - 1 && xs[drop] < lo) drop++;
    if (drop) d.forEach(function (arr) { arr.splice(0, drop); });
    if (c.u) c.u.setData(view(c));
    else if (c.pendingLabels) { draw(c, c.pendingLabels); c.pendingLabels = null; }
    points(c);
    c.node.dataset.appended = (parseInt(c.node.dataset.appended || "0", 10) + 1).toString();
  }

  // --- lifecycle -------------------------------------------------------------------------
  function scan() {
    if (!window.uPlot) return;
    // Charts swapped out of the page let go of their observers and timers.
    charts = charts.filter(function (c) {
      if (c.node.isConnected) return true;
      if (c.ro) c.ro.disconnect();
      if (c.timer) clearInterval(c.timer);
      if (c.u) c.u.destroy();
      return false;
    });
    document.querySelectorAll("[data-chart]").forEach(function (node) {
      if (!node._pgChart) setup(node);
    });
  }

  document.addEventListener("DOMContentLoaded", scan);
  document.addEventListener("htmx:afterSettle", scan);
  document.addEventListener("htmx:historyRestore", scan); // back to a tab: its charts are drawn afresh
  document.addEventListener("htmx:oobAfterSwap", function (evt) {
    var incoming = evt.target;
    if (incoming && incoming.id === "telemetry-feed") feed(document.getElementById("telemetry-feed"));
  });

  window.PulseGuardCharts = { charts: function () { return charts; }, feed: feed, format: { bytes: bytes, compact: compact, money: money } };
})();
