// The kiosk dashboard: polls /api/dashboard and redraws the figures in place.
(function () {
  "use strict";
  const COLOURS = { female: "#d9668f", male: "#4a7fc1", unknown: "#a0a0a0" };
  const refreshMs = Number(document.body.dataset.refreshMs) || 3000;
  const state = { charts: {}, last: null, updates: 0, timer: null };
  window.kioskDashboard = state;

  const $ = (id) => document.getElementById(id);
  const text = (id, value) => { const el = $(id); if (el.textContent !== value) el.textContent = value; };
  const seconds = (v) => (v === null || v === undefined ? "–" : v.toFixed(1) + " s");
  const percent = (v) => (v === null || v === undefined ? "–" : Math.round(v * 100) + " %");
  // the page's own camera, site, location and kiosk (?site=north) narrow every request
  const scope = new URLSearchParams();
  new URLSearchParams(window.location.search).forEach((value, key) => {
    if (["camera", "site", "location", "kiosk"].includes(key) && value) scope.append(key, value);
  });
  const scoped = (query) => { const q = new URLSearchParams(query); scope.forEach((v, k) => q.append(k, v)); return "?" + q.toString(); };

  function timeLabel(ms, bucket) {
    const d = new Date(ms);
    const hm = d.toLocaleTimeString([], { hour: "2-digit", minute: "2-digit" });
    return bucket >= 3600 ? d.toLocaleDateString([], { weekday: "short" }) + " " + hm : hm;
  }

  function makeCharts() {
    if (typeof Chart === "undefined") return;
    Chart.defaults.animation = false;  // a kiosk redraws often; motion only distracts
    const common = { responsive: true, maintainAspectRatio: false };
    state.charts.brackets = new Chart($("chart-brackets"), {
      type: "bar",
      data: { labels: [], datasets: ["female", "male", "unknown"].map((g) => ({ label: g, data: [], backgroundColor: COLOURS[g] })) },
      options: { ...common, scales: { x: { stacked: true }, y: { stacked: true, beginAtZero: true, ticks: { precision: 0 } } } },
    });
    state.charts.timeline = new Chart($("chart-timeline"), {
      data: {
        labels: [],
        datasets: [
          { type: "bar", label: "visits", data: [], backgroundColor: "#4a7fc1", yAxisID: "y" },
          { type: "bar", label: "viewers", data: [], backgroundColor: "#f0a030", yAxisID: "y" },
          { type: "line", label: "attention rate", data: [], borderColor: "#2f9e44", yAxisID: "rate", spanGaps: true, pointRadius: 2 },
        ],
      },
      options: {
        ...common,
        scales: {
          y: { beginAtZero: true, ticks: { precision: 0 } },
          rate: { position: "right", min: 0, max: 1, grid: { drawOnChartArea: false }, ticks: { callback: (v) => Math.round(v * 100) + "%" } },
        },
      },
    });
    state.charts.dwell = new Chart($("chart-dwell"), {
      type: "bar",
      data: { labels: [], datasets: [{ label: "visits", data: [], backgroundColor: "#5a9e6f" }] },
      options: { ...common, scales: { y: { beginAtZero: true, ticks: { precision: 0 } } } },
    });
    state.charts.attention = new Chart($("chart-attention"), {
      type: "bar",
      data: { labels: [], datasets: [{ label: "viewers", data: [], backgroundColor: "#f0a030" }] },
      options: { ...common, scales: { y: { beginAtZero: true, ticks: { precision: 0 } } } },
    });
  }

  function setData(chart, labels, series) {
    if (!chart) return;
    chart.data.labels = labels;
    series.forEach((values, i) => { chart.data.datasets[i].data = values; });
    chart.update("none");
  }

  // a table body rebuilt from rows: text only (textContent), never markup from the data
  function fillTable(id, rows, cells, rowClass) {
    const table = $(id);
    const body = document.createElement("tbody");
    rows.forEach((row) => {
      const tr = document.createElement("tr");
      const cls = rowClass ? rowClass(row) : "";
      if (cls) tr.className = cls;
      cells(row).forEach((value) => {
        const td = document.createElement("td");
        td.textContent = value;
        tr.appendChild(td);
      });
      body.appendChild(tr);
    });
    table.replaceChild(body, table.tBodies[0]);
  }

  function contact(k) {
    if (k.last_contact === null || k.last_contact === undefined) return "never";
    return new Date(k.last_contact * 1000).toLocaleString();
  }

  function renderFleet(fleet) {
    const section = $("fleet");
    section.hidden = !fleet;
    if (!fleet) return;
    fillTable("sites-table", fleet.sites, (s) => [s.site || "(no site)", String(s.kiosks), String(s.visits), String(s.viewers),
      percent(s.attention_rate), seconds(s.average_dwell_s)]);
    fillTable("kiosks-table", fleet.kiosks, (k) => [k.kiosk_id, k.site, k.location, contact(k),
      k.backlog === null || k.backlog === undefined ? "–" : String(k.backlog), k.quiet ? "quiet" : "ok"],
      (k) => (k.quiet ? "quiet" : ""));
  }

  function render(d) {
    const live = d.live;
    const status = $("status");
    status.className = live.fresh ? "live" : "offline";
    status.textContent = live.fresh ? "live" : live.running ? "camera offline" : "kiosk stopped";
    text("visitors-now", String(live.faces));
    text("visits-today", String(d.today.visits));
    text("viewers-today", String(d.today.viewers));
    text("attention-rate", percent(d.today.attention_rate));
    text("avg-dwell", seconds(d.today.average_dwell_s));
    text("avg-attention", seconds(d.today.average_attention_s));

    const brackets = Object.keys(d.brackets);
    setData(state.charts.brackets, brackets, ["female", "male", "unknown"].map((g) => brackets.map((b) => d.brackets[b][g])));
    const tl = d.timeline;
    setData(state.charts.timeline, tl.map((r) => timeLabel(r.start * 1000, d.range.bucket_s)),
      [tl.map((r) => r.visits), tl.map((r) => r.viewers), tl.map((r) => r.attention_rate)]);
    setData(state.charts.dwell, d.dwell.labels, [d.dwell.visits]);
    setData(state.charts.attention, d.attention.labels, [d.attention.viewers]);

    renderFleet(d.fleet);

    const q = scoped({ from: d.range.from, to: d.range.to });
    $("export-visits").href = "export/visits.csv" + q;
    $("export-report").href = "export/report.csv" + q;
    $("api-report").href = "api/report" + q;
    text("updated", new Date().toLocaleTimeString());
    state.last = d;
    state.updates += 1;
    document.body.dataset.updates = String(state.updates);
  }

  async function refresh() {
    try {
      const response = await fetch("api/dashboard" + scoped({ range: $("range").value }), { cache: "no-store" });
      if (!response.ok) throw new Error("HTTP " + response.status);
      render(await response.json());
    } catch (err) {
      const status = $("status");
      status.className = "offline";
      status.textContent = "no connection to the kiosk";
    }
  }

  makeCharts();
  $("range").addEventListener("change", refresh);
  refresh();
  state.timer = setInterval(refresh, refreshMs);
})();
