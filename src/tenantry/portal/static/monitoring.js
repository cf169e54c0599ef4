/* The drilldown's graph: fetch /monitoring/graph.json and draw it with uPlot (vendored in
   /static/uplot). The span links work without this script too (a page per span); with it,
   a click redraws in place. Everything from the server is shown through textContent. */
(function () {
  "use strict";
  var box = document.getElementById("graph");
  var summary = document.getElementById("graph-summary");
  if (!box || !summary) return;
  if (typeof uPlot === "undefined") { summary.textContent = "No graph: the chart library did not load."; return; }
  var COLOURS = ["#2456c9", "#7b3fc4", "#0f8a8a", "#c44f8e", "#5a7a1a", "#8a5a00"];
  var SPANS = {"1h": [3600, "hour"], "1d": [86400, "day"], "1w": [604800, "week"],
               "1m": [2592000, "month"]};
  var plot = null;

  function say(text) { summary.textContent = text; }

  function labelOf(series, graph) {
    var keys = Object.keys(series.labels).sort();
    if (!keys.length) return graph.target;
    return keys.map(function (k) { return k + "=" + series.labels[k]; }).join(", ");
  }

  function format(value, unit) {
    if (value === null || value === undefined) return "—";
    var text = Math.abs(value) >= 100 ? value.toFixed(0) : value.toPrecision(3);
    return unit ? text + " " + unit : text;
  }

  // Times in UTC, as everywhere in the portal: "2026-11-30 23:05:00".
  function utc(ts) { return new Date(ts * 1000).toISOString().slice(0, 19).replace("T", " "); }
  function ticks(span) {
    var cut = span === "1h" ? [11, 16] : span === "1d" ? [5, 16] : [5, 10];
    return function (u, splits) {
      return splits.map(function (ts) { return utc(ts).slice(cut[0], cut[1]); });
    };
  }

  function draw(graph) {
    var stamps = new Set();
    graph.series.forEach(function (s) { s.points.forEach(function (p) { stamps.add(p[0]); }); });
    var xs = Array.from(stamps).sort(function (a, b) { return a - b; });
    var at = new Map(xs.map(function (t, i) { return [t, i]; }));
    var data = [xs];
    var series = [{label: "UTC", value: function (u, ts) { return ts == null ? "—" : utc(ts); }}];
    var points = 0;
    var last = null;
    graph.series.forEach(function (s, n) {
      var ys = xs.map(function () { return null; });
      s.points.forEach(function (p) { ys[at.get(p[0])] = p[1]; });
      points += s.points.length;
      if (s.points.length) last = s.points[s.points.length - 1][1];
      data.push(ys);
      series.push({label: labelOf(s, graph), stroke: COLOURS[n % COLOURS.length], width: 1.5,
                   value: function (u, v) { return format(v, graph.unit); }});
    });
    [["busy", graph.busy, "#e0a000"], ["overloaded", graph.overloaded, "#d73a3a"]]
      .forEach(function (t) {
        if (t[1] === null || !xs.length) return;
        data.push(xs.map(function () { return t[1]; }));
        series.push({label: t[0], stroke: t[2], width: 1, dash: [6, 4],
                     value: function (u, v) { return format(v, graph.unit); }});
      });
    if (plot) { plot.destroy(); plot = null; }
    box.dataset.points = String(points);
    box.dataset.series = String(graph.series.length);
    if (!points) {
      say("No data for " + graph.check + " on " + graph.target + " in this span yet.");
      return;
    }
    var end = Date.now() / 1000;  // the whole span, however little of it has data
    plot = new uPlot({
      width: Math.max(box.clientWidth - 16, 300), height: 320,
      series: series,
      axes: [{values: ticks(graph.span)}, {label: graph.unit || graph.check, size: 60}],
      scales: {x: {time: true, range: [end - SPANS[graph.span][0], end]}},
      tzDate: function (ts) { return uPlot.tzDate(new Date(ts * 1000), "Etc/UTC"); },
    }, data, box);
    say(graph.series.length + " series, " + points + " points over the last " +
        SPANS[graph.span][1] + "; latest " + format(last, graph.unit) + ".");
  }

  function load(span) {
    box.dataset.span = span;
    say("Loading…");
    fetch(box.dataset.src + "&range=" + encodeURIComponent(span),
          {credentials: "same-origin", headers: {"Accept": "application/json"}})
      .then(function (r) {
        if ((r.headers.get("content-type") || "").indexOf("application/json") < 0) {
          window.location.reload();  // the session ended: the page itself goes to the login
          throw new Error("not logged in");
        }
        return r.json().then(function (body) {
          if (!r.ok) throw new Error(body.error ? body.error.message : r.statusText);
          return body;
        });
      })
      .then(draw)
      .catch(function (e) { say("No graph: " + e.message); });
  }

  document.querySelectorAll("nav.spans a[data-span]").forEach(function (link) {
    link.addEventListener("click", function (event) {
      event.preventDefault();
      document.querySelectorAll("nav.spans a").forEach(function (a) {
        a.classList.toggle("on", a === link);
        if (a === link) a.setAttribute("aria-current", "true");
        else a.removeAttribute("aria-current");
      });
      history.replaceState(null, "", link.href);
      load(link.dataset.span);
    });
  });
  window.addEventListener("resize", function () {
    if (plot) plot.setSize({width: Math.max(box.clientWidth - 16, 300), height: 320});
  });
  load(box.dataset.span || "1h");
})();
