// The feature-map viewer: loads /data/<model>/manifest.json and a layer-N.json, draws its features in 3-D
// with plotly.js, and shows labels on hover, search and click; a click, a search result or a neighbour opens
// the feature's page (feature_page.js, loaded before this file).
// Labels come from outside (Neuronpedia, LLMs): they are only ever set with textContent, never as HTML,
// and plotly's own hover labels (which render a subset of HTML) are switched off.
"use strict";
/* global FeaturePage */

const PALETTE = ["#1f77b4", "#ff7f0e", "#2ca02c", "#d62728", "#9467bd", "#8c564b", "#e377c2", "#bcbd22",
  "#17becf", "#393b79", "#637939", "#8c6d31", "#843c39", "#7b4173", "#3182bd", "#e6550d"];
const NOISE = "#c8c8c8";
const MAX_RESULTS = 50;
const SEARCH_DELAY_MS = 200;

const state = { model: null, manifest: null, layer: null, nodes: [], edges: new Map(), byId: new Map(), webgl: false,
  selected: null, found: [], searchSeq: 0, searchTimer: null };
const $ = (id) => document.getElementById(id);

function setText(el, value) { el.textContent = value == null ? "" : String(value); }

async function getJSON(url) {
  const response = await fetch(url, { cache: "no-store" });
  if (!response.ok) throw new Error(`${url}: HTTP ${response.status}`);
  return response.json();
}

function hasWebGL() {
  try { return !!document.createElement("canvas").getContext("webgl"); } catch (err) { return false; }
}

function nodeName(node) {
  return `#${node.id}` + (node.label ? ` ${node.label}` : " (no label)");
}

function option(select, value, text) {
  const el = document.createElement("option");
  el.value = String(value);
  setText(el, text);
  select.appendChild(el);
}

function colours(mode) {
  if (mode === "cluster") {
    return state.nodes.map((n) => (n.cluster == null || n.cluster < 0 ? NOISE : PALETTE[n.cluster % PALETTE.length]));
  }
  const logs = state.nodes.map((n) => (n.density > 0 ? Math.log10(n.density) : null));
  const known = logs.filter((v) => v !== null);
  const floor = known.length ? Math.min(...known) - 1 : 0;  // dead / unknown: below every live feature
  return logs.map((v) => (v === null ? floor : v));
}

function axes(points) {
  const pick = (i) => points.map((n) => n.position[i]);
  return state.webgl ? { x: pick(0), y: pick(1), z: pick(2) } : { x: pick(0), y: pick(1) };
}

function traces() {
  const mode = $("colour").value;
  const all = {
    type: state.webgl ? "scatter3d" : "scatter", mode: "markers", name: "features", ...axes(state.nodes),
    customdata: state.nodes.map((_, i) => i), hoverinfo: "none",
    marker: mode === "cluster" ? { size: 3, color: colours(mode) }
      : { size: 3, color: colours(mode), colorscale: "Viridis", showscale: true, colorbar: { title: { text: "log10 density" } } },
  };
  const empty = { mode: "markers", customdata: [], hoverinfo: "none", x: [], y: [], ...(state.webgl ? { z: [] } : {}) };
  const matches = { ...empty, type: all.type, name: "search", marker: { size: 6, color: "#e4002b" } };
  const links = { ...empty, type: all.type, mode: "lines+markers", name: "neighbours",
    line: { color: "#111", width: 2 }, marker: { size: 5, color: "#111" } };
  return [all, matches, links];
}

function draw() {
  const layout = { margin: { l: 0, r: 0, t: 0, b: 0 }, showlegend: false, hovermode: "closest", uirevision: state.layer,
    scene: { xaxis: { title: { text: "x" } }, yaxis: { title: { text: "y" } }, zaxis: { title: { text: "z" } } } };
  return Plotly.react($("plot"), traces(), layout, { displaylogo: false, responsive: true });
}

function indexEdges(edges) {
  const byNode = new Map();
  for (const e of edges) {
    if (!byNode.has(e.source)) byNode.set(e.source, []);
    byNode.get(e.source).push(e);
  }
  for (const list of byNode.values()) list.sort((a, b) => b.similarity - a.similarity || a.target - b.target);
  return byNode;
}

async function loadLayer(layer) {
  const entry = state.manifest.layers.find((l) => l.layer === layer);
  setText($("status"), `loading layer ${layer}…`);
  const data = await getJSON(`/data/${encodeURIComponent(state.model)}/${encodeURIComponent(entry.file)}`);
  state.layer = layer;
  state.nodes = data.nodes;
  state.byId = new Map(data.nodes.map((n, i) => [n.id, i]));
  state.edges = indexEdges(data.edges);
  clearSelection();
  await draw();
  search($("search").value);
  follow(FeaturePage.current());
  setText($("status"), `${data.nodes.length} features, ${data.edges.length} edges` + (state.webgl ? "" : " (no WebGL: x, y only)"));
  const sae = $("sae-link");  // the SAE page of the map's model and layer
  sae.href = "/sae?" + new URLSearchParams({ model: state.model, layer: String(layer) });
  sae.hidden = false;
  document.body.dataset.layer = String(layer);
  document.body.dataset.ready = "1";
}

async function loadModel(model) {
  state.model = model;
  state.manifest = await getJSON(`/data/${encodeURIComponent(model)}/manifest.json`);
  const layers = $("layer");
  layers.replaceChildren();
  for (const l of state.manifest.layers) option(layers, l.layer, `${l.layer} (${l.features} features)`);
  const wanted = Number(new URLSearchParams(location.search).get("layer"));
  const first = state.manifest.layers.some((l) => l.layer === wanted) ? wanted : state.manifest.layers[0].layer;
  layers.value = String(first);
  await loadLayer(first);
}

function hover(index, x, y) {
  const tip = $("tooltip");
  if (index == null) { tip.hidden = true; return; }
  setText(tip, nodeName(state.nodes[index]));
  tip.style.left = `${(x ?? 20) + 12}px`;
  tip.style.top = `${(y ?? 20) + 12}px`;
  tip.hidden = false;
}

function listItem(list, text, onClick) {
  const li = document.createElement("li");
  setText(li, text);
  li.addEventListener("click", onClick);
  list.appendChild(li);
  return li;
}

// The map's model and layer, else (no map loaded) those of the open feature page.
function where() {
  if (state.model && state.layer != null) return { model: state.model, layer: state.layer };
  const open = FeaturePage.current();
  return open ? { model: open.model, layer: open.layer } : null;
}

function openFeature(feature) {
  const at = where();
  if (at) FeaturePage.open({ ...at, feature });
}

// The map follows the page: the feature's point selected when the page is of the map's model and layer.
function follow(target) {
  if (!target || target.model !== state.model || target.layer !== state.layer) return;
  const i = state.byId.get(target.feature);
  if (i !== undefined && i !== state.selected) select(i);
}

function showResults(visible) { $("results-box").hidden = !visible; }

// The results list: features as links to their pages; `source` says whose labels matched (the lake or the map).
function listResults(items, total, source, note) {
  const results = $("results");
  results.replaceChildren();
  const at = where();
  for (const { feature, label } of items.slice(0, MAX_RESULTS)) {
    const li = document.createElement("li");
    const text = FeaturePage.featureName(feature, label);
    li.appendChild(at ? FeaturePage.link({ ...at, feature }, text, () => showResults(false))
      : document.createTextNode(text));
    results.appendChild(li);
  }
  if (total > items.length || items.length > MAX_RESULTS) {
    const more = document.createElement("li");
    setText(more, `… and ${total - Math.min(items.length, MAX_RESULTS)} more`);
    results.appendChild(more);
  }
  setText($("results-note"), note);
  Object.assign(results.dataset, { count: String(total), source });
}

// The lake's search (/api/search: labels and explanations of every feature, or an index); kept only when it is
// still the latest query. Without a lake partition the map's matches stay, with the reason.
async function searchLake(q, seq) {
  const at = where();
  if (!at) return;
  const params = new URLSearchParams({ model: at.model, layer: String(at.layer), q });
  let body = null, error = null;
  try {
    const response = await fetch(`/api/search?${params}`, { cache: "no-store" });
    body = await response.json().catch(() => null);
    if (!response.ok || !body || !Array.isArray(body.results)) error = (body && body.error) || `HTTP ${response.status}`;
  } catch (err) {
    error = err.message;
  }
  if (seq !== state.searchSeq) return;
  if (error !== null) {
    setText($("results-note"), `lake search unavailable (${error}): the map's labels matched`);
    $("results").dataset.lake = "error";
    return;
  }
  listResults(body.results, body.total, "lake", `${body.total} in the lake (labels and explanations)`);
  $("results").dataset.lake = "ok";
}

// The map's matches drawn as the highlight trace.
function highlight(found) {
  if (!state.nodes.length) return;
  const points = found.map((i) => state.nodes[i]);
  Plotly.restyle($("plot"), { ...Object.fromEntries(Object.entries(axes(points)).map(([k, v]) => [k, [v]])),
    customdata: [found] }, [1]);
}

// Labels of the map matching `query` (at once: listed and highlighted), then the lake's search (after a pause
// in typing) replaces the list.
function search(query) {
  const q = (query || "").trim().toLowerCase();
  const found = q ? state.nodes.flatMap((n, i) => (n.label && n.label.toLowerCase().includes(q) ? [i] : [])) : [];
  const seq = ++state.searchSeq;
  clearTimeout(state.searchTimer);
  state.found = found;
  listResults(found.map((i) => ({ feature: state.nodes[i].id, label: state.nodes[i].label })), found.length, "map",
    q ? `${found.length} on the map` : "");
  delete $("results").dataset.lake;
  highlight(found);
  if (q) state.searchTimer = setTimeout(() => searchLake(query.trim(), seq), SEARCH_DELAY_MS);
  return found;
}

function clearSelection() {
  state.selected = null;
  setText($("selected-title"), "click a point");
  for (const id of ["selected-label", "selected-stats"]) setText($(id), "");
  $("neighbours").replaceChildren();
  hover(null);
}

function select(index) {
  const node = state.nodes[index];
  state.selected = index;
  setText($("selected-title"), `feature ${node.id}`);
  setText($("selected-label"), node.label || "(no label)");
  const cluster = node.cluster == null ? "" : `, cluster ${node.cluster}`;
  setText($("selected-stats"), `density ${node.density == null ? "n/a" : node.density}${cluster}`);
  const list = $("neighbours");
  list.replaceChildren();
  const chain = [];
  for (const e of state.edges.get(node.id) || []) {
    const j = state.byId.get(e.target);
    if (j === undefined) continue;
    listItem(list, `${nodeName(state.nodes[j])} (${e.similarity.toFixed(3)})`, () => {
      select(j);
      openFeature(state.nodes[j].id);
    });
    chain.push(node, state.nodes[j], null);
  }
  const gap = { position: [null, null, null] };
  const points = chain.map((n) => n || gap);
  Plotly.restyle($("plot"), { ...Object.fromEntries(Object.entries(axes(points)).map(([k, v]) => [k, [v]])),
    customdata: [chain.map((n) => (n ? state.byId.get(n.id) : null))] }, [2]);
  list.dataset.count = String(chain.length / 3);
  return chain.length / 3;
}

function pointIndex(event) {
  const p = event && event.points && event.points[0];
  return p && p.customdata != null ? p.customdata : null;
}

function bindSearch() {
  const box = $("search");
  box.addEventListener("input", (ev) => { search(ev.target.value); showResults(!!ev.target.value.trim()); });
  box.addEventListener("focus", () => showResults(!!box.value.trim()));
  box.addEventListener("keydown", (ev) => { if (ev.key === "Escape") showResults(false); });
  document.addEventListener("click", (ev) => { if (!ev.target.closest(".search-wrap")) showResults(false); });
}

async function main() {
  state.webgl = hasWebGL();
  const plot = $("plot");
  FeaturePage.init({ onShow: follow });  // a deep link ?model=&layer=&feature= opens its page at once
  bindSearch();
  const { models } = await getJSON("/data/models.json");
  if (!models.length) { setText($("status"), "no feature maps exported yet: materialize feature_map"); return; }
  for (const m of models) option($("model"), m, m);
  const wanted = new URLSearchParams(location.search).get("model");
  $("model").value = models.includes(wanted) ? wanted : models[0];
  await loadModel($("model").value);
  plot.on("plotly_hover", (ev) => hover(pointIndex(ev), ev.event && ev.event.clientX, ev.event && ev.event.clientY));
  plot.on("plotly_unhover", () => hover(null));
  plot.on("plotly_click", (ev) => {
    const i = pointIndex(ev);
    if (i == null) return;
    select(i);
    openFeature(state.nodes[i].id);
  });
  $("model").addEventListener("change", (ev) => loadModel(ev.target.value));
  $("layer").addEventListener("change", (ev) => loadLayer(Number(ev.target.value)));
  $("colour").addEventListener("change", () => draw().then(() => {
    highlight(state.found);
    if (state.selected != null) select(state.selected);
  }));
}

window.saeViewer = { state, search, select, hover };
main().catch((err) => { setText($("status"), `error: ${err.message}`); document.body.dataset.error = err.message; });
