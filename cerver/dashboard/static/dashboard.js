// Dashboard behaviour: charts (uPlot, vendored) from JSON the server embeds, and the copy
// button of a new token. No other script runs; nothing is fetched from another host.
(function () {
  "use strict";

  function width(el) { return Math.max(280, el.clientWidth || 600); }

  // Axis labels that fit: 12,345 for big values, 0.000123 for tiny ones (USD per session).
  function short(v) {
    if (v === 0) { return "0"; }
    return Math.abs(v) >= 1 ? v.toLocaleString("en-US", { maximumFractionDigits: 1 })
                            : v.toPrecision(2);
  }

  function latency(el, s) {
    if (!s.x.length) { el.textContent = "No runs yet."; return; }
    new uPlot({
      width: width(el), height: 200,
      series: [{}, { label: "exec latency (ms)", stroke: "#1565c0", width: 2, points: { show: true } }],
      axes: [{}, { label: "ms", size: 60 }],
    }, [s.x, s.y], el);
  }

  function bars(el, labels, series, colors) {
    if (!labels.length) { el.textContent = "Nothing to chart yet."; return; }
    var xs = labels.map(function (_, i) { return i; });
    var opts = {
      width: width(el), height: 220,
      scales: { x: { time: false, range: [-0.5, labels.length - 0.5] } },
      axes: [{ values: function (_u, ticks) { return ticks.map(function (t) { return labels[t] || ""; }); },
               splits: function () { return xs; } },
             { size: 80, values: function (_u, ticks) { return ticks.map(short); } }],
      series: [{}].concat(series.map(function (s, i) {
        return { label: s.label, stroke: colors[i], fill: colors[i] + "55",
                 paths: uPlot.paths.bars({ size: [0.6 / series.length, 60], align: 0 }) };
      })),
    };
    new uPlot(opts, [xs].concat(series.map(function (s) { return s.values; })), el);
  }

  function draw() {
    document.querySelectorAll("[data-chart]").forEach(function (el) {
      if (el.dataset.drawn) { return; }
      el.dataset.drawn = "1";
      var data = JSON.parse(el.dataset.series);
      if (el.dataset.chart === "latency") { latency(el, data); }
      if (el.dataset.chart === "costs") {
        bars(el, data.map(function (r) { return r.source; }),
             [{ label: "USD", values: data.map(function (r) { return r.usd; }) }], ["#6a1b9a"]);
      }
      if (el.dataset.chart === "stress") {
        bars(el, data.map(function (r) { return r.provider; }), [
          { label: "p50 ms", values: data.map(function (r) { return r.p50; }) },
          { label: "p95 ms", values: data.map(function (r) { return r.p95; }) },
          { label: "p99 ms", values: data.map(function (r) { return r.p99; }) },
        ], ["#2e7d32", "#ef6c00", "#b00020"]);
      }
    });
    document.querySelectorAll("[data-copy]").forEach(function (button) {
      button.addEventListener("click", function () {
        var input = document.querySelector(button.dataset.copy);
        input.select();
        (navigator.clipboard ? navigator.clipboard.writeText(input.value) : Promise.reject())
          .catch(function () { document.execCommand("copy"); })
          .finally(function () { button.textContent = "Copied"; });
      });
    });
  }
  document.addEventListener("DOMContentLoaded", draw);
})();
