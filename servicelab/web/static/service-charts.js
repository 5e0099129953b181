// The service page's charts: traffic, latency, errors, CPU and memory over the last hour,
// drawn with uPlot (vendored: static/uplot.iife.min.js) from GET .../metrics every 5 s.
(() => {
  "use strict";
  const card = document.getElementById("doing");
  if (!card || typeof uPlot === "undefined") return;
  const csrf = document.body.dataset.csrf || "";
  const charts = {};
  let hour = [0, 1]; // the x range every chart shows: the traffic's last hour
  const width = () => Math.max(220, Math.floor(card.clientWidth / 3) - 24);

  function chart(name, series, data) {
    const box = card.querySelector(`[data-chart=${name}]`);
    if (!charts[name]) {
      charts[name] = new uPlot(
        {
          width: width(),
          height: 140,
          legend: { show: series.length > 1 },
          scales: { x: { time: true, range: () => hour } },
          series: [{}, ...series.map(([label, stroke]) => ({ label, stroke, width: 1.5, spanGaps: false, points: { show: true, size: 4 } }))],
          axes: [{ size: 30 }, { size: 48 }],
        },
        data,
        box,
      );
    } else {
      charts[name].setData(data);
    }
    box.dataset.points = String(data[1].filter((v) => v !== null && v !== undefined).length);
  }

  async function update() {
    let body;
    try {
      const response = await fetch(card.dataset.metricsUrl, {
        headers: { Accept: "application/json", "X-CSRF-Token": csrf },
        credentials: "same-origin",
      });
      if (!response.ok) return;
      body = (await response.json()).data;
    } catch (_) {
      return; // the next tick tries again
    }
    hour = [body.times[0], body.times[body.times.length - 1] + body.step];
    // Steps without requests are gaps in latency and errors, zero in the rate.
    chart("requests", [["req/s", "#2563eb"]], [body.times, body.requestsPerSecond]);
    chart("latency", [["p50", "#16a34a"], ["p99", "#dc2626"]], [body.times, body.p50Ms, body.p99Ms]);
    chart("errors", [["5xx share", "#dc2626"]], [body.times, body.errorRate]);
    const usage = body.usage;
    chart("cpu", [["CPU %", "#9333ea"]], [usage.times, usage.cpuPercent]);
    chart("memory", [["MiB", "#ea580c"]], [usage.times, usage.memoryBytes.map((b) => b / 1048576)]);
    card.querySelector("[data-restarts]").textContent = String(body.restarts);
    card.querySelector("[data-last-failure]").textContent = body.lastFailure || "—";
  }

  update();
  setInterval(update, 5000);
})();
