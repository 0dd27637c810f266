// The pool's live page: reads status.json once a second and redraws.
// No build step, no library: plain DOM. Everything from the document is
// set as text (request class names come from clients).
"use strict";

(function () {
  const REFRESH_MS = 1000;
  const SVG = "http://www.w3.org/2000/svg";
  const $ = (id) => document.getElementById(id);
  let refreshes = 0;

  function el(tag, attrs, ...kids) {
    const e = document.createElement(tag);
    for (const [k, v] of Object.entries(attrs || {})) {
      if (v === undefined || v === null) continue;
      if (k === "class") e.className = v;
      else if (k.startsWith("data-")) e.setAttribute(k, v);
      else e[k] = v;
    }
    for (const k of kids) e.append(k instanceof Node ? k : document.createTextNode(String(k)));
    return e;
  }

  function num(x, digits) {
    if (x === undefined || x === null || Number.isNaN(x)) return "–";
    if (digits === undefined) return Number(x).toLocaleString("en-US");
    return Number(x).toFixed(digits);
  }

  function ms(seconds) {
    if (seconds === undefined || seconds === null) return "–";
    const m = seconds * 1000;
    return m < 10 ? m.toFixed(2) + " ms" : m < 1000 ? m.toFixed(1) + " ms" : (m / 1000).toFixed(2) + " s";
  }

  function duration(s) {
    s = Math.max(0, Math.round(s));
    const d = Math.floor(s / 86400), h = Math.floor(s / 3600) % 24, m = Math.floor(s / 60) % 60;
    return d ? `${d}d ${h}h` : h ? `${h}h ${m}m` : m ? `${m}m ${s % 60}s` : `${s}s`;
  }

  // Résumé scores span orders of magnitude: three significant figures.
  function score(s) {
    if (s >= 100) return Math.round(s).toLocaleString("en-US");
    return Number(s.toPrecision(3)).toString();
  }

  function clock(t) {
    return new Date(t * 1000).toLocaleTimeString("en-GB", { hour12: false });
  }

  function header(doc) {
    const lb = doc.lb || {};
    $("lb-address").textContent = lb.address || "";
    $("lb-about").textContent =
      `version ${lb.version || "?"} · pool ${doc.pool || "?"} · pid ${lb.pid || "?"} · up ${duration((lb.now || 0) - (lb.started || 0))}`;
    const live = $("live");
    live.className = "ok";
    live.textContent = "live, " + clock(lb.now || Date.now() / 1000);
  }

  function totals(doc) {
    const t = doc.totals || {};
    const list = doc.worker_list || [];
    const avail = list.filter((w) => w.state === "available").length;
    const tiles = [
      ["Requests/s", num(t.requests_per_s, 1)],
      ["In flight", num(t.in_flight)],
      ["Backlog", num(doc.backlog)],
      ["Waiting", num(doc.waiting)],
      ["Clients", num(doc.clients)],
      ["Workers available", `${avail} / ${list.length}`],
      ["Requests", num(t.requests)],
      ["5xx", num(t.errors_5xx)],
    ];
    $("totals").replaceChildren(...tiles.map(([k, v]) => el("div", {}, el("dt", {}, k), el("dd", {}, v))));
  }

  function chart(svg, values) {
    const w = 300, h = 60, n = 300;
    const max = Math.max(1, ...values);
    const kids = [];
    kids.push(line(0, h - 0.5, w, h - 0.5));
    kids.push(line(0, 0.5, w, 0.5));
    if (values.length > 1) {
      const x0 = w - (values.length - 1) * (w / (n - 1));
      const pts = values.map((v, i) => [x0 + i * (w / (n - 1)), h - 2 - (v / max) * (h - 10)]);
      const s = pts.map((p) => p[0].toFixed(1) + "," + p[1].toFixed(1)).join(" ");
      const area = document.createElementNS(SVG, "polygon");
      area.setAttribute("points", `${pts[0][0].toFixed(1)},${h} ${s} ${w},${h}`);
      kids.push(area);
      const pl = document.createElementNS(SVG, "polyline");
      pl.setAttribute("points", s);
      kids.push(pl);
    }
    svg.replaceChildren(...kids);
  }

  function line(x1, y1, x2, y2) {
    const l = document.createElementNS(SVG, "line");
    l.setAttribute("x1", x1); l.setAttribute("y1", y1); l.setAttribute("x2", x2); l.setAttribute("y2", y2);
    return l;
  }

  function history(doc) {
    const h = doc.history || { points: [] };
    const rate = h.points.map((p) => p[1]);
    const backlog = h.points.map((p) => p[2]);
    chart($("chart-rate"), rate);
    chart($("chart-backlog"), backlog);
    const last = (a) => (a.length ? a[a.length - 1] : null);
    const top = (a) => (a.length ? Math.max(...a) : null);
    $("rate-now").textContent = `now ${num(last(rate), 1)} · max ${num(top(rate), 1)}`;
    $("backlog-now").textContent = `now ${num(last(backlog))} · max ${num(top(backlog))}`;
    const row = (name, a) => el("tr", {}, el("th", { scope: "row" }, name),
      el("td", {}, num(last(a))), el("td", {}, a.length ? num(Math.min(...a)) : "–"),
      el("td", {}, a.length ? num(Math.max(...a)) : "–"));
    $("history-table").tBodies[0].replaceChildren(row("Requests per second", rate), row("Backlog", backlog));
  }

  function capacity(w) {
    const cap = w.capacity;
    const text = cap ? `${w.in_flight} / ${cap}` : `${w.in_flight}`;
    if (!cap) return el("td", {}, text);
    const fill = el("i", {});
    const f = Math.min(1, w.in_flight / cap);
    fill.style.width = (f * 100).toFixed(0) + "%";
    if (f >= 1) fill.className = "full";
    return el("td", {}, el("span", { class: "bar", "aria-hidden": "true" }, fill), text);
  }

  function workers(doc) {
    const rows = (doc.worker_list || []).map((w) => {
      const state = el("td", {}, el("span", { class: "state state-" + w.state }, w.state));
      if (w.reason) state.append(el("span", { class: "reason" }, w.reason));
      return el("tr", { "data-address": w.address, "data-state": w.state },
        el("th", { scope: "row" }, w.address),
        state,
        el("td", {}, w.version || "–"),
        el("td", { class: "num" }, num(w.threads)),
        capacity(w),
        el("td", { class: "num" }, num(w.backlog)),
        el("td", { class: "num" }, num(w.mean_backlog, 2)),
        el("td", { class: "num" }, num(w.requests_per_s, 1)),
        el("td", { class: "num" }, num(w.requests)),
        el("td", { class: "num" }, num(w.errors_5xx)),
        el("td", { class: "num" }, num(w.ejections)),
        el("td", { class: "num" }, num(w.resume_size)));
    });
    if (!rows.length) rows.push(el("tr", {}, el("td", { colSpan: 12 }, "No workers.")));
    $("workers").tBodies[0].replaceChildren(...rows);
  }

  function classes(doc) {
    const ws = (doc.worker_list || []).map((w) => w.address);
    const table = $("classes");
    const head = el("tr", {},
      el("th", { scope: "col" }, "Class"),
      el("th", { scope: "col", class: "num" }, "Req/s"),
      el("th", { scope: "col", class: "num" }, "p50"),
      el("th", { scope: "col", class: "num" }, "p99"),
      el("th", { scope: "col", class: "num" }, "To best"),
      ...ws.map((a) => el("th", { scope: "col", class: "num worker", title: a }, a)));
    table.tHead.replaceChildren(head);
    const rows = (doc.classes || []).map((c) => {
      const scores = c.scores || {};
      const best = Math.max(0, ...Object.values(scores));
      const cells = ws.map((a) => {
        const s = scores[a];
        const td = el("td", { class: "num heat" }, s === undefined ? "" : score(s));
        if (s !== undefined && best > 0) {
          td.style.backgroundColor = `rgba(var(--accent), ${(0.08 + 0.72 * (s / best)).toFixed(2)})`;
        }
        if (a === c.best_worker) {
          td.className += " best";
          td.title = "best score";
        }
        return td;
      });
      return el("tr", { "data-class": c.class },
        el("th", { scope: "row", class: "cls", title: c.class }, c.class === "" ? "(no class)" : c.class),
        el("td", { class: "num" }, num(c.requests_per_s, 1)),
        el("td", { class: "num" }, ms(c.p50)),
        el("td", { class: "num" }, ms(c.p99)),
        el("td", { class: "num" }, c.best_share === null || c.best_share === undefined ? "–" : (c.best_share * 100).toFixed(0) + "%"),
        ...cells);
    });
    if (!rows.length) rows.push(el("tr", {}, el("td", { colSpan: 5 + ws.length }, "No requests yet.")));
    table.tBodies[0].replaceChildren(...rows);
  }

  function events(doc) {
    const items = (doc.events || []).slice().reverse().map((e) =>
      el("li", { "data-kind": e.kind },
        el("time", { dateTime: new Date(e.time * 1000).toISOString() }, clock(e.time)),
        el("span", { class: "kind kind-" + e.kind }, e.kind),
        el("span", {}, e.worker ? `${e.worker}: ${e.text}` : e.text)));
    if (!items.length) items.push(el("li", { class: "none" }, "Nothing yet."));
    $("events").replaceChildren(...items);
  }

  function render(doc) {
    header(doc);
    totals(doc);
    history(doc);
    workers(doc);
    classes(doc);
    events(doc);
    refreshes += 1;
    document.body.dataset.refreshes = String(refreshes);
  }

  async function refresh() {
    const n = $("n-classes").value;
    try {
      const r = await fetch("status.json?classes=" + encodeURIComponent(n), { cache: "no-store" });
      if (!r.ok) throw new Error("HTTP " + r.status);
      render(await r.json());
    } catch (e) {
      const live = $("live");
      live.className = "stale";
      live.textContent = "no answer from the load balancer (" + e.message + "); retrying";
    }
    setTimeout(refresh, REFRESH_MS);
  }

  refresh();
})();
