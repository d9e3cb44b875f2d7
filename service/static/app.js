// Search page: calls POST /search with explain=true and renders highlighted hits with per-stage scores.
"use strict";

const $ = (id) => document.getElementById(id);
const KEY = "neural-search-api-key";

function headers() {
  const h = { "content-type": "application/json" };
  const key = $("apikey").value.trim();
  if (key) h["authorization"] = "Bearer " + key;
  return h;
}

function queryTerms(query) {
  const seen = new Set();
  for (const t of query.toLowerCase().match(/[\p{L}\p{N}]+/gu) || []) {
    if (t.length >= 2 || /[^\x00-\x7f]/.test(t)) seen.add(t);
  }
  return [...seen].sort((a, b) => b.length - a.length);
}

// Append `text` to `parent` with every query term wrapped in <mark>; text nodes only, never parsed as HTML.
function highlight(parent, text, terms) {
  if (!terms.length) { parent.append(text); return; }
  const escaped = terms.map((t) => t.replace(/[.*+?^${}()|[\]\\]/g, "\\$&"));
  const re = new RegExp("(" + escaped.join("|") + ")", "giu");
  let last = 0;
  for (const m of text.matchAll(re)) {
    parent.append(text.slice(last, m.index));
    const mark = document.createElement("mark");
    mark.textContent = m[0];
    parent.append(mark);
    last = m.index + m[0].length;
  }
  parent.append(text.slice(last));
}

// Append `text` with the [start, end) offsets from the server (analyzer-aware matches) wrapped in <mark>.
function markSpans(parent, text, spans) {
  let last = 0;
  for (const [start, end] of spans || []) {
    parent.append(text.slice(last, start));
    const mark = document.createElement("mark");
    mark.textContent = text.slice(start, end);
    parent.append(mark);
    last = end;
  }
  parent.append(text.slice(last));
}

// Stage names as a reader knows them; "_rank" entries are ranks (integers), the rest scores.
const STAGE_LABELS = { bm25: "BM25", dense: "dense", hybrid: "hybrid", ce: "cross-encoder", first: "FIRST" };

function label(key) {
  const base = key.replace(/_rank$/, "").replace(/_interpolated$/, "");
  return STAGE_LABELS[base] || base;
}

function formatStage(key, value) {
  if (key.endsWith("_rank")) return `${label(key)} rank #${Math.round(value)}`;
  if (key.endsWith("_interpolated")) return `blended ${Number(value).toFixed(3)}`;
  return `${label(key)} ${Number(value).toFixed(3)}`;
}

function scoresTable(stageScores) {
  const table = document.createElement("table");
  table.className = "scores";
  const row = table.insertRow();
  for (const [stage, score] of Object.entries(stageScores || {})) {
    const th = document.createElement("th");
    th.textContent = stage.endsWith("_rank") ? `${label(stage)} rank` : stage;
    row.append(th);
    const td = row.insertCell();
    td.className = "stage-score";
    td.dataset.stage = stage;
    td.textContent = stage.endsWith("_rank") ? `#${Math.round(score)}` : Number(score).toFixed(4);
  }
  return table;
}

// One sentence per hit: how each stage saw it, the last entry being what orders the list.
function explanation(stageScores) {
  const entries = Object.entries(stageScores || {});
  if (!entries.length) return "";
  const ordering = entries[entries.length - 1][0];
  const parts = entries.map(([k, v]) => formatStage(k, v));
  const why = ordering.endsWith("_interpolated")
    ? "ordered by the blend of the reranker and first-stage scores (each min-max scaled over this query's candidates)"
    : `ordered by ${label(ordering)}`;
  return `${parts.join(" · ")} — ${why}`;
}

function render(body, query) {
  const terms = queryTerms(query);
  const list = $("results");
  list.replaceChildren();
  for (const hit of body.hits) {
    const li = document.createElement("li");
    li.className = "hit";
    const title = document.createElement("div");
    const t = document.createElement("span");
    t.className = "title";
    if (hit.title_highlights) markSpans(t, hit.title || "(untitled)", hit.title ? hit.title_highlights : []);
    else highlight(t, hit.title || "(untitled)", terms);
    const id = document.createElement("span");
    id.className = "docid";
    id.textContent = `#${hit.rank} · ${hit.doc_id} · score ${hit.score.toFixed(3)}`;
    title.append(t, id);
    const p = document.createElement("p");
    p.className = "text";
    if (hit.snippet !== undefined) markSpans(p, hit.snippet, hit.highlights);
    else highlight(p, hit.text, terms);
    li.append(title, p);
    if (hit.snippet !== undefined && hit.snippet !== hit.text) {
      const more = document.createElement("details");
      const summary = document.createElement("summary");
      summary.textContent = "full text";
      const full = document.createElement("p");
      full.className = "text";
      highlight(full, hit.text, terms);
      more.append(summary, full);
      li.append(more);
    }
    const why = document.createElement("p");
    why.className = "why";
    why.textContent = explanation(hit.stage_scores);
    li.append(why, scoresTable(hit.stage_scores));
    list.append(li);
  }
  const timings = Object.entries(body.timings_ms || {}).map(([s, ms]) => `${s} ${ms.toFixed(1)} ms`).join(", ");
  $("summary").textContent = `${body.hits.length} results from ${body.pipeline} on ${body.collection} in ${body.took_ms.toFixed(1)} ms`
    + (timings ? ` (${timings})` : "") + (body.cached ? " · cached" : "")
    + (body.degraded && body.degraded.length ? ` · degraded: ${body.degraded.join(", ")}` : "");
}

async function fillPipelines() {
  const r = await fetch("/pipelines");
  if (!r.ok) { $("status").textContent = "service not ready"; return; }
  const all = await r.json();
  const collections = [...new Set(all.map((p) => p.collection))];
  $("collection").replaceChildren(...collections.map((c) => new Option(c, c)));
  const update = () => {
    const c = $("collection").value;
    const loaded = all.filter((p) => p.collection === c && p.loaded);
    $("pipeline").replaceChildren(...loaded.map((p) => new Option(p.name, p.name)));
  };
  $("collection").addEventListener("change", update);
  update();
  $("status").textContent = "ready";
}

async function search(event) {
  event.preventDefault();
  $("error").textContent = "";
  const query = $("query").value;
  sessionStorage.setItem(KEY, $("apikey").value);
  const payload = { query, k: Number($("k").value) || 10, pipeline: $("pipeline").value, explain: true, highlight: true };
  if ($("collection").value) payload.collection = $("collection").value;
  if ($("lang").value) payload.lang = $("lang").value;
  $("go").disabled = true;
  const started = performance.now();
  const tick = () => { $("status").textContent = `searching with ${payload.pipeline}… ${((performance.now() - started) / 1000).toFixed(1)} s`; };
  tick();
  const ticker = setInterval(tick, 200);  // rerankers take seconds on a CPU: show that the search is running
  try {
    const r = await fetch("/search", { method: "POST", headers: headers(), body: JSON.stringify(payload) });
    const body = await r.json();
    if (!r.ok) {
      $("results").replaceChildren();
      $("summary").textContent = "";
      $("error").textContent = `${r.status}: ${typeof body.detail === "string" ? body.detail : JSON.stringify(body.detail)}`;
      return;
    }
    render(body, query);
  } catch (err) {
    $("error").textContent = String(err);
  } finally {
    clearInterval(ticker);
    $("status").textContent = "ready";
    $("go").disabled = false;
    document.body.dataset.searched = String(Number(document.body.dataset.searched || 0) + 1);
  }
}

// A link like /?q=volcano&pipeline=bm25&lang=en opens with that search done.
async function fromUrl() {
  const params = new URLSearchParams(location.search);
  for (const name of ["collection", "pipeline", "lang", "k"]) {
    const value = params.get(name);
    if (value !== null && $(name).querySelector && $(name).tagName === "SELECT" && ![...$(name).options].some((o) => o.value === value)) {
      $(name).append(new Option(value, value));
    }
    if (value !== null) $(name).value = value;
  }
  if (params.get("q")) {
    $("query").value = params.get("q");
    $("search-form").requestSubmit();
  }
}

document.addEventListener("DOMContentLoaded", async () => {
  $("apikey").value = sessionStorage.getItem(KEY) || "";
  $("search-form").addEventListener("submit", search);
  await fillPipelines();
  await fromUrl();
  document.body.dataset.ready = "1";
});
