// routeq UI: one snapshot per tick over SSE renders overview, batches and quality; the batch page
// reads its own batch's detail. Plain DOM, no build step, no network beyond this server.
"use strict";
const TIERS = ["haiku", "sonnet", "opus"];
const state = { csrf: null, snap: null, sort: "created_ms", desc: true, view: "overview", batch: null,
  cursor: 0, lastDetail: 0 };
const $ = (sel) => document.querySelector(sel);
const esc = (s) => String(s ?? "").replace(/[&<>"']/g, (c) => ({ "&": "&amp;", "<": "&lt;", ">": "&gt;", '"': "&quot;", "'": "&#39;" })[c]);
const usd = (v) => (v == null ? "–" : "$" + Number(v).toFixed(Math.abs(v) >= 100 ? 2 : 4));
const num = (v) => (v == null ? "–" : Number(v).toLocaleString("en-US"));
const dur = (s) => { if (s == null) return "–"; s = Math.round(s); if (s < 60) return s + "s";
  if (s < 3600) return Math.floor(s / 60) + "m " + (s % 60) + "s"; if (s < 86400) return Math.floor(s / 3600) + "h " + Math.floor((s % 3600) / 60) + "m";
  return Math.floor(s / 86400) + "d " + Math.floor((s % 86400) / 3600) + "h"; };

async function api(path, opts = {}) {
  const r = await fetch(path, { credentials: "same-origin", ...opts });
  if (r.status === 401) { document.body.innerHTML = "<main><h2>401: this page needs the UI token</h2><p>Open it as /?token=…</p></main>"; throw new Error("401"); }
  if (!r.ok) throw new Error(path + ": " + r.status);
  return r.json();
}

function bar(row) {
  const total = Math.max(1, row.enqueued);
  const pct = (n) => (100 * n / total).toFixed(2) + "%";
  const live = Math.max(0, row.failed - row.dead);
  const canceled = row.canceled || 0;
  return `<div class="bar" title="${row.done} done, ${row.failed} failed (${row.dead} dead), ${canceled} canceled, ${row.pending} pending">` +
    `<span class="done" style="width:${pct(row.done)}"></span><span class="failed" style="width:${pct(live)}"></span>` +
    `<span class="dead" style="width:${pct(row.dead)}"></span><span class="canceled" style="width:${pct(canceled)}"></span></div>`;
}

function renderOverview(ov) {
  $("#ov-cost").textContent = usd(ov.cost_usd);
  $("#ov-baseline").textContent = usd(ov.baseline_cost_usd);
  $("#ov-saved").textContent = usd(ov.levers.net_savings_usd);
  $("#ov-saved-pct").textContent = `${ov.savings_pct.toFixed(1)}% before shadow spend · cache hit ${(100 * ov.cache_hit_rate).toFixed(1)}%`;
  $("#ov-rate").textContent = ov.jobs_per_s.toFixed(1) + " jobs/s";
  $("#ov-jobs").textContent = num(ov.jobs);
  $("#ov-intake").textContent = num(ov.intake_depth);
  $("#ov-workers").textContent = `${ov.workers.alive} / ${ov.workers.registered}`;
  $("#ov-batches").textContent = num(ov.batches);
  const L = ov.levers;
  $("#levers tbody").innerHTML = [
    ["routing (cheaper tiers than all top tier)", usd(L.routing_usd)],
    ["caching (net of cache write premiums)", usd(L.caching_usd)],
    ["batch discount", L.batch_discount_usd == null ? '<span class="empty">not in use</span>' : usd(L.batch_discount_usd)],
    ["minus shadow spend (quality checks)", usd(-L.shadow_spend_usd)],
    ["<b>net saved</b>", "<b>" + usd(L.net_savings_usd) + "</b>"],
  ].map(([k, v]) => `<tr><td>${k}</td><td>${v}</td></tr>`).join("");
  const spend = TIERS.reduce((a, t) => a + ov.tiers[t].cost_usd, 0) || 1;
  $("#tiers tbody").innerHTML = TIERS.map((t) => {
    const r = ov.tiers[t];
    return `<tr id="tier-${t}"><td><span class="swatch tier-${t}"></span>${t}</td><td class="depth">${num(r.queue_depth)}</td>` +
      `<td class="inflight">${num(r.in_flight)} / ${r.limit == null ? "∞" : num(r.limit)} <button class="action set-limit" data-tier="${t}" title="set the fleet-wide concurrency">set</button></td>` +
      `<td class="${r.cooldown_s > 0 ? "cooling" : ""}">${r.cooldown_s > 0 ? r.cooldown_s + "s" : "–"}</td>` +
      `<td class="h429">${num(r.http_429)}</td><td class="h529">${num(r.http_529)}</td><td class="jobs">${num(r.jobs)}</td>` +
      `<td class="cost">${usd(r.cost_usd)}</td><td class="wide"><div class="hbar tier-${t}" style="width:${(100 * r.cost_usd / spend).toFixed(1)}%"></div></td></tr>`;
  }).join("");
}

function sortRows(rows) {
  const k = state.sort, d = state.desc ? -1 : 1;
  return [...rows].sort((a, b) => {
    const x = a[k] ?? "", y = b[k] ?? "";
    return (x < y ? -1 : x > y ? 1 : 0) * d;
  });
}

function batchRows(rows) {
  return rows.map((r) =>
    `<tr class="row" data-batch="${esc(r.batch)}"><td class="id">${esc(r.batch)}</td><td>${esc(r.tenant ?? "")}</td>` +
    `<td>${dur(r.age_s)}</td><td class="wide">${bar(r)}</td><td class="n-done">${num(r.done)}</td>` +
    `<td class="n-failed">${num(r.failed)}</td><td class="n-dead">${num(r.dead)}</td><td class="n-pending">${num(r.pending)}</td>` +
    `<td class="n-cost">${usd(r.cost_usd)}</td><td>${r.savings_pct.toFixed(1)}%</td>` +
    `<td>${r.pending ? (r.eta_s == null ? "–" : dur(r.eta_s)) : "done"}</td></tr>`).join("");
}

function renderBatches(rows) {
  $("#batch-count").textContent = `(${rows.length})`;
  document.querySelectorAll("#batches th[data-sort]").forEach((th) => {
    th.classList.toggle("sorted", th.dataset.sort === state.sort);
    th.classList.toggle("asc", !state.desc);
  });
  $("#batches tbody").innerHTML = rows.length ? batchRows(sortRows(rows)) : '<tr><td colspan="11" class="empty">no batches yet</td></tr>';
  const running = rows.filter((r) => r.pending > 0);
  $("#running-count").textContent = running.length > 10 ? `(10 newest of ${running.length})` : `(${running.length})`;
  $("#running tbody").innerHTML = running.length ? batchRows(running.slice(0, 10)) : '<tr><td colspan="11" class="empty">none: every batch is finished</td></tr>';
}

function renderQuality(q) {
  $("#q-summary").textContent = `${num(q.overall.total)} shadow comparisons, ${(100 * q.overall.rate).toFixed(1)}% agree; ` +
    `shadow spend ${usd(q.shadow_cost_pusd / 1e12)}; ${num(q.labels)} labels kept`;
  const rows = Object.entries(q.by);
  $("#quality tbody").innerHTML = rows.length ? rows.map(([k, v]) =>
    `<tr><td>${esc(k)}</td><td>${num(v.agree)}</td><td>${num(v.total)}</td><td class="wide">${(100 * v.rate).toFixed(1)}%` +
    `<div class="hbar tier-sonnet" style="width:${(100 * v.rate).toFixed(1)}%"></div></td></tr>`).join("")
    : '<tr><td colspan="4" class="empty">no shadow runs (set ROUTEQ_SHADOW_RATE)</td></tr>';
}

function chart(series, idx, fmtv, unit) {
  const pts = TIERS.flatMap((t) => (series[t] || []).map((p) => p[0]));
  if (!pts.length) return '<p class="empty">nothing finished yet</p>';
  const t0 = Math.min(...pts), t1 = Math.max(...pts) + 60, W = 800, H = 180, P = 30;
  const bySlot = {};
  TIERS.forEach((t) => (series[t] || []).forEach((p) => { (bySlot[p[0]] ??= {})[t] = p[idx]; }));
  const maxC = Math.max(...Object.values(bySlot).map((s) => TIERS.reduce((a, t) => a + (s[t] || 0), 0)), 1e-12);
  const bw = Math.max(2, (W - 2 * P) * 60 / (t1 - t0) - 2);
  let bars = "";
  for (const [m, s] of Object.entries(bySlot)) {
    let y = H - P;
    const x = P + (W - 2 * P) * (m - t0) / (t1 - t0);
    for (const t of TIERS) {
      const h = (H - 2 * P) * (s[t] || 0) / maxC;
      if (h > 0) { y -= h; bars += `<rect x="${x.toFixed(1)}" y="${y.toFixed(1)}" width="${bw.toFixed(1)}" height="${h.toFixed(1)}" class="tier-${t}" fill="var(--${t})"><title>${t} ${fmtv(s[t])}</title></rect>`; }
    }
  }
  const fmt = (t) => new Date(t * 1000).toISOString().slice(11, 16);
  return `<svg viewBox="0 0 ${W} ${H}" preserveAspectRatio="none"><line class="axis" x1="${P}" y1="${H - P}" x2="${W - P}" y2="${H - P}"/>` +
    `${bars}<text x="${P}" y="${H - 12}">${fmt(t0)}</text><text x="${W - P - 30}" y="${H - 12}">${fmt(t1)}</text>` +
    `<text x="${P}" y="14">max ${fmtv(maxC)} ${unit} / min</text></svg>` +
    TIERS.map((t) => `<span class="muted"><span class="swatch tier-${t}"></span>${t}</span> `).join("");
}

async function renderDetail(id, withJobs) {
  const d = await api(`/api/batches/${encodeURIComponent(id)}`);
  const rep = d.report, row = (state.snap?.batches || []).find((b) => b.batch === id);
  $("#bd-id").textContent = id;
  $("#bd-tenant").textContent = d.tenant ? "tenant " + d.tenant : "";
  $("#bd-cards").innerHTML = `<div class="card"><div class="label">Progress</div><div class="value" id="bd-progress">${num(rep.done + rep.failed + rep.canceled)} / ${num(rep.done + rep.failed + rep.canceled + rep.pending)}</div>` +
    `<div class="sub">${num(rep.done)} done · ${num(rep.failed)} failed · ${num(d.dead.length)} dead${rep.canceled ? " · " + num(rep.canceled) + " canceled" : ""} · ${num(rep.pending)} pending</div>${row ? bar(row) : ""}</div>` +
    `<div class="card"><div class="label">Spend</div><div class="value" id="bd-cost">${usd(rep.cost_usd)}</div><div class="sub">baseline ${usd(rep.baseline_cost_usd)}</div></div>` +
    `<div class="card"><div class="label">Saved</div><div class="value">${rep.savings_pct.toFixed(1)}%</div><div class="sub">routing ${usd(rep.routing_savings_usd)} · caching ${usd(rep.cache_savings_usd)}</div></div>` +
    `<div class="card"><div class="label">ETA</div><div class="value">${row ? (row.pending ? dur(row.eta_s) : "done") : "–"}</div><div class="sub">${row ? row.jobs_per_s.toFixed(1) + " jobs/s" : ""}</div></div>`;
  $("#bd-tiers tbody").innerHTML = TIERS.filter((t) => rep.tiers[t]).map((t) => { const r = rep.tiers[t];
    return `<tr id="bd-tier-${t}"><td><span class="swatch tier-${t}"></span>${t}</td><td>${num(r.jobs)}</td><td>${num(r.calls)}</td><td>${num(r.input_tokens)}</td>` +
      `<td>${num(r.output_tokens)}</td><td>${num(r.cache_write_tokens)}</td><td>${num(r.cache_read_tokens)}</td><td class="cost">${usd(r.cost_usd)}</td></tr>`; }).join("");
  $("#bd-chart").innerHTML = chart(d.series, 1, usd, "");
  $("#bd-chart-jobs").innerHTML = chart(d.series, 2, num, "jobs");
  $("#bd-esc tbody").innerHTML = d.escalations.length ? d.escalations.map((e) =>
    `<tr><td>${esc(e.from_tier)}</td><td>${esc(e.reason)}</td><td>${num(e.jobs)}</td></tr>`).join("") : '<tr><td colspan="3" class="empty">none</td></tr>';
  $("#bd-retry-all").hidden = !d.dead.some((x) => x.retryable);
  $("#bd-dead tbody").innerHTML = d.dead.length ? d.dead.map((x) =>
    `<tr><td>${esc(x.job_id)}</td><td>${esc(x.task)}</td><td>${esc(x.error_type)}</td><td class="msg">${esc(x.error)}</td><td>${num(x.attempts)}</td>` +
    `<td>${x.retryable ? `<button class="action retry" data-job="${esc(x.job_id)}">retry</button>` : ""}</td></tr>`).join("")
    : '<tr><td colspan="6" class="empty">none</td></tr>';
  if (withJobs) { state.cursor = 0; $("#bd-jobs tbody").innerHTML = ""; await moreJobs(id); }
}

async function moreJobs(id) {
  const page = await api(`/api/batches/${encodeURIComponent(id)}/jobs?cursor=${state.cursor}`);
  $("#bd-jobs tbody").insertAdjacentHTML("beforeend", page.jobs.map((j) =>
    `<tr><td>${esc(j.job_id)}</td><td>${esc(j.status)}</td><td>${esc(j.task ?? "")}</td><td>${esc(j.tier ?? "")}</td>` +
    `<td class="why">${esc(j.reason ?? "")}</td><td>${num(j.attempts)}</td><td>${j.cost_usd == null ? "–" : usd(j.cost_usd)}</td>` +
    `<td>${j.latency_ms == null ? "–" : num(j.latency_ms) + " ms"}</td>` +
    `<td>${j.trace_url ? `<a href="${esc(j.trace_url)}" target="_blank" rel="noopener">trace</a>` : ""}</td></tr>`).join(""));
  state.cursor = page.next_cursor || 0;
  $("#bd-more").hidden = !page.next_cursor;
}

async function retry(body) {
  const r = await api(`/api/batches/${encodeURIComponent(state.batch)}/retry`, { method: "POST",
    headers: { "Content-Type": "application/json", "X-CSRF-Token": state.csrf }, body: JSON.stringify(body) });
  await renderDetail(state.batch, true);
  return r;
}

function render() {
  const s = state.snap;
  if (!s) return;
  renderOverview(s.overview);
  renderBatches(s.batches);
  renderQuality(s.quality);
  if (state.view === "batch" && Date.now() - state.lastDetail > 2500) {
    state.lastDetail = Date.now();
    renderDetail(state.batch, false).catch(() => {});
  }
}

function route() {
  const h = location.hash.replace(/^#\/?/, "");
  const [view, ...rest] = h.split("/");
  state.view = view === "batch" ? "batch" : ["batches", "quality"].includes(view) ? view : "overview";
  state.batch = state.view === "batch" ? decodeURIComponent(rest.join("/")) : null;
  document.querySelectorAll(".view").forEach((v) => { v.hidden = v.id !== "view-" + state.view; });
  document.querySelectorAll("nav a").forEach((a) => a.classList.toggle("active", a.dataset.view === state.view));
  if (state.view === "batch") { state.lastDetail = Date.now(); renderDetail(state.batch, true).catch((e) => console.error(e)); }
}

function connect() {
  const es = new EventSource("/api/events");
  es.addEventListener("snapshot", (ev) => { state.snap = JSON.parse(ev.data); $("#live").className = "live on"; $("#live").textContent = "live"; render(); });
  es.onerror = () => { $("#live").className = "live off"; $("#live").textContent = "reconnecting…"; };
}

async function main() {
  const sess = await api("/api/session");
  state.csrf = sess.csrf_token;
  const [ov, bl] = await Promise.all([api("/api/overview"), api("/api/batches")]);
  state.snap = { overview: ov, quality: ov.quality, batches: bl.batches };
  window.addEventListener("hashchange", route);
  route();
  render();
  document.querySelector("#batches thead").addEventListener("click", (e) => {
    const k = e.target.dataset?.sort; if (!k) return;
    state.desc = state.sort === k ? !state.desc : true; state.sort = k; render();
  });
  for (const sel of ["#batches tbody", "#running tbody"]) $(sel).addEventListener("click", (e) => {
    const tr = e.target.closest("tr[data-batch]"); if (tr) location.hash = "#/batch/" + encodeURIComponent(tr.dataset.batch);
  });
  $("#bd-dead").addEventListener("click", (e) => { const b = e.target.closest("button.retry"); if (b) retry({ job_id: b.dataset.job }); });
  $("#bd-retry-all").addEventListener("click", () => retry({}));
  $("#tiers tbody").addEventListener("click", async (e) => {
    const b = e.target.closest("button.set-limit"); if (!b) return;
    const v = window.prompt(`Fleet-wide concurrency for ${b.dataset.tier}:`); if (!v) return;
    await api(`/api/limits/${b.dataset.tier}`, { method: "POST",
      headers: { "Content-Type": "application/json", "X-CSRF-Token": state.csrf }, body: JSON.stringify({ concurrency: Number(v) }) });
  });
  $("#bd-more").addEventListener("click", () => moreJobs(state.batch));
  connect();
  document.body.dataset.ready = "1";
}
main().catch((e) => console.error(e));
