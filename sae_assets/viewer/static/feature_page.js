// The feature page: everything the lake knows about one feature (GET /api/feature), in a panel over the map.
// Opened by a click on the map, a search result, a link on another feature's page, or a deep link
// ?model=&layer=&feature=; each opening is a history entry (pushState), so back and forward walk the pages.
// Every string from the lake (labels, explanations, tokens, prompts) becomes a text node (textContent /
// createTextNode), never HTML; links are built from the model key (URL-encoded) and integers only.
"use strict";

const FeaturePage = (() => {
  const INDEX = /^[0-9]{1,9}$/;
  const state = { target: null, seq: 0, onShow: null };
  const $ = (id) => document.getElementById(id);

  // --- DOM helpers: text only ----------------------------------------------------------------------------

  // An element; props are set as properties or attributes (never an on* handler), children as text or nodes.
  function el(tag, props, ...children) {
    const node = document.createElement(tag);
    for (const [key, value] of Object.entries(props || {})) {
      if (value == null) continue;
      if (/^on/i.test(key)) throw new Error(`no inline handler: ${key}`);
      if (key === "class") node.className = value;
      else if (key === "title") node.title = String(value);
      else if (key === "data") Object.assign(node.dataset, value);
      else node.setAttribute(key, String(value));
    }
    for (const child of children.flat(Infinity)) {
      if (child == null) continue;
      node.appendChild(child instanceof Node ? child : document.createTextNode(String(child)));
    }
    return node;
  }

  function fmt(value) {
    if (value == null || value === "") return "n/a";
    if (typeof value === "boolean") return value ? "yes" : "no";
    const number = Number(value);
    if (!Number.isFinite(number)) return String(value);
    return Number.isInteger(number) ? String(number) : String(Number(number.toPrecision(4)));
  }

  // --- targets, URLs, links --------------------------------------------------------------------------------

  function pageUrl(t) {
    return "?" + new URLSearchParams({ model: t.model, layer: String(t.layer), feature: String(t.feature) });
  }

  function fromUrl(search) {
    const params = new URLSearchParams(search);
    const model = params.get("model"), layer = params.get("layer"), feature = params.get("feature");
    if (!model || !INDEX.test(layer || "") || !INDEX.test(feature || "")) return null;
    return { model, layer: Number(layer), feature: Number(feature) };
  }

  function same(a, b) {
    return !!a && !!b && a.model === b.model && a.layer === b.layer && a.feature === b.feature;
  }

  // A link to a feature's page: a real href (middle-click opens a tab), a plain click opens it here.
  function link(target, text, onOpen) {
    const a = el("a", { href: pageUrl(target), class: "feature-link", data: { feature: String(target.feature) } }, text);
    a.addEventListener("click", (ev) => {
      if (ev.button !== 0 || ev.ctrlKey || ev.metaKey || ev.shiftKey || ev.altKey) return;
      ev.preventDefault();
      if (onOpen) onOpen(target);
      open(target);
    });
    return a;
  }

  function featureName(feature, label) {
    return `#${feature} ` + (label == null || label === "" ? "(no label)" : label);
  }

  // --- sections ---------------------------------------------------------------------------------------------

  function statusLine(section) {
    if (!section) return el("p", { class: "status error" }, "not in the server's answer");
    if (section.status === "missing") return el("p", { class: "status missing" }, section.message);
    if (section.status === "none") {
      return el("p", { class: "status none" }, "no rows for this feature",
        section.message ? el("span", { class: "detail" }, ` (${section.message})`) : null);
    }
    return el("p", { class: "status error" }, `error: ${section.message || "unknown"}`);
  }

  function block(name, title, section, render) {
    const status = section ? section.status : "error";
    return el("section", { class: "fp-section", data: { section: name, status } }, el("h3", {}, title),
      status === "ok" ? render(section) : statusLine(section));
  }

  function definitions(pairs) {
    return el("dl", { class: "facts" }, pairs.map(([term, value]) => [el("dt", {}, term), el("dd", {}, value)]));
  }

  function renderLabels(s) {
    // Every candidate with its held-out detection score; the shown label is the best-scoring (its row is marked).
    const rows = [["llm", "LLM label", s.label_llm, s.score_llm],
      ["keywords", "keyword label", s.label_keywords, s.score_keywords],
      ["explanation", "Neuronpedia explanation", s.label_explanation, s.score_explanation]];
    return [
      el("p", { class: "chosen" }, el("strong", {}, s.label == null ? "(no label)" : s.label),
        ` — source ${s.label_source || "n/a"}, score ${fmt(s.score)}`),
      el("table", { class: "candidates" }, el("tr", {}, el("th", {}, "candidate"), el("th", {}, "text"),
        el("th", {}, "score")), rows.map(([source, kind, text, score]) => el("tr",
        { class: source === s.label_source ? "winner" : "" }, el("td", {}, kind),
        el("td", {}, text == null ? "—" : text), el("td", {}, fmt(score))))),
      s.error ? el("p", { class: "status error" }, `labelling error: ${s.error}`) : null,
    ];
  }

  function renderExplanations(s) {
    return el("ol", { class: "explanations" }, s.rows.map((r) => {
      const about = [r.explanation_type, r.explainer_model, r.source].filter((x) => x).join(", ");
      return el("li", {}, el("span", {}, r.description), about ? el("span", { class: "detail" }, ` (${about})`) : null);
    }));
  }

  function labelsBlock(s) {
    const section = block("labels", "Label", s, renderLabels);
    const explanations = s && s.explanations;
    section.appendChild(el("h4", {}, "Explanations"));
    section.appendChild(explanations && explanations.status === "ok" ? renderExplanations(explanations)
      : statusLine(explanations));
    return section;
  }

  function renderStats(s) {
    return definitions([["density", fmt(s.density)], ["max activation", fmt(s.max_activation)],
      ["mean activation", fmt(s.mean_activation)], ["entropy", fmt(s.activation_entropy)],
      ["documents", fmt(s.n_docs_active)], ["tokens active", fmt(s.n_tokens_active)]]);
  }

  function renderHistogram(s) {
    const top = Math.max(1, ...s.counts);
    const bars = s.counts.map((count, i) => {
      const bar = el("div", { class: "bar", title: `${fmt(s.edges[i])} to ${fmt(s.edges[i + 1])}: ${count}` });
      bar.style.height = `${(100 * count) / top}%`;
      return bar;
    });
    return [el("div", { class: "histogram" }, bars),
      el("div", { class: "axis" }, el("span", {}, fmt(s.edges[0])), el("span", {}, fmt(s.edges[s.edges.length - 1]))),
      el("p", { class: "detail" }, `${s.n_values} values; ${s.note || ""}`)];
  }

  function shownToken(token) {
    return token == null ? "" : String(token).replace(/\n/g, "↵").replace(/\t/g, "⇥");
  }

  // Token chips; with activations, each shaded by activation / max and the peak outlined.
  function tokenRow(tokens, activations, peak, max) {
    return el("span", { class: "tokens" }, (tokens || []).map((token, i) => {
      const act = activations ? activations[i] : null;
      const chip = el("span", { class: "tok", title: act == null ? null : `activation ${fmt(act)}` }, shownToken(token));
      if (act > 0) {
        chip.classList.add("on");
        chip.style.backgroundColor = `rgba(255, 120, 0, ${Math.min(1, act / max).toFixed(3)})`;
      }
      if (i === peak) chip.classList.add("peak");
      return chip;
    }));
  }

  function exampleRows(examples, max) {
    return el("div", { class: "examples" }, examples.map((e) => el("div", { class: "example" },
      el("span", { class: "meta", title: `document ${e.doc_index}, token ${e.token_position}` }, fmt(e.activation)),
      tokenRow(e.tokens, e.token_activations, e.peak, max))));
  }

  function renderExamples(s) {
    const all = [...s.top, ...s.quantiles.flatMap((q) => q.examples), ...s.random];
    const max = Math.max(0, ...all.flatMap((e) => (e.token_activations || []).filter((a) => Number.isFinite(a))));
    const c = s.counts || {};
    return [el("p", { class: "detail" }, `${c.top || 0} top, ${c.quantile || 0} quantile, ${c.random || 0} random; ` +
        `shading: activation / ${fmt(max)} (the largest here), peak token outlined`),
      el("h4", {}, "Top activations"), exampleRows(s.top, max),
      s.quantiles.map((q) => [el("h4", {}, `Quantile bin ${q.quantile}`), exampleRows(q.examples, max)]),
      s.random.length ? [el("h4", {}, "Random"), exampleRows(s.random, max)] : null];
  }

  function tokenValues(kind, rows) {
    return el("div", {}, el("h4", {}, kind), el("ol", { class: `logits ${kind}` }, rows.map((r) => el("li", {},
      el("span", { class: "tok", title: `token id ${r.id}` }, shownToken(r.token)), " ",
      el("span", { class: "value" }, fmt(r.value))))));
  }

  function renderLogits(s) {
    return el("div", { class: "pair" }, tokenValues("promoted", s.promoted), tokenValues("suppressed", s.suppressed));
  }

  function featureList(rows, value) {
    const t = state.target;
    return el("ol", { class: "links" }, rows.map((r) => el("li", {},
      link({ model: t.model, layer: t.layer, feature: r.feature }, featureName(r.feature, r.label)), " ",
      el("span", { class: "value" }, value(r)))));
  }

  function renderDecoder(s) {
    return featureList(s.neighbours, (r) => `cos ${fmt(r.similarity)}`);
  }

  function renderCooccurring(s) {
    return [el("p", { class: "detail" }, `active in ${s.marginal} of ${s.n_windows} windows; ${s.n_partners} partners`),
      featureList(s.partners, (r) => `Phi ${fmt(r.phi)} (${r.count} together)`)];
  }

  function renderSemantic(s) {
    return [el("p", { class: "detail" }, `embedding model ${s.embedding_model}`),
      featureList(s.neighbours, (r) => `cos ${fmt(r.similarity)}`)];
  }

  function renderAlignment(s) {
    return el("table", { class: "scores" }, el("tr", {}, el("th", {}, "embedding model"), el("th", {}, "NDCG"),
      el("th", {}, "explained")), s.scores.map((r) => el("tr", {}, el("td", {}, r.embedding_model),
      el("td", {}, fmt(r.ndcg)), el("td", {}, fmt(r.has_explanation)))));
  }

  function renderCluster(s) {
    return definitions([["cluster", s.cluster != null && s.cluster < 0 ? `${s.cluster} (noise)` : fmt(s.cluster)],
      ["kept", fmt(s.kept)], ["selected", fmt(s.selected)]]);
  }

  function renderPrompts(s) {
    return el("div", { class: "prompts" }, s.prompts.map((p) => el("div", { class: "prompt" },
      el("p", { class: "detail" }, `${p.method}: activation ${fmt(p.activation)} = ${fmt(p.ratio)} × dataset max ` +
        `${fmt(p.dataset_max_activation)}; cross-entropy ${fmt(p.cross_entropy)}`),
      p.tokens ? tokenRow(p.tokens, null, -1, 1) : el("span", { class: "tokens" }, p.text))));
  }

  function render(page) {
    const s = page.sections || {};
    return [labelsBlock(s.labels),
      el("div", { class: "pair" }, block("stats", "Statistics", s.stats, renderStats),
        block("histogram", "Activation histogram", s.histogram, renderHistogram)),
      block("examples", "Examples", s.examples, renderExamples),
      block("logit_effects", "Logit effects", s.logit_effects, renderLogits),
      el("div", { class: "triple" }, block("decoder_neighbours", "Decoder neighbours", s.decoder_neighbours, renderDecoder),
        block("cooccurring", "Co-occurring (top Phi)", s.cooccurring, renderCooccurring),
        block("semantic_neighbours", "Semantic neighbours", s.semantic_neighbours, renderSemantic)),
      el("div", { class: "pair" }, block("alignment", "SFAL alignment", s.alignment, renderAlignment),
        block("cluster", "Cluster", s.cluster, renderCluster)),
      block("optimized_prompts", "Optimized prompts", s.optimized_prompts, renderPrompts)];
  }

  // --- opening, closing, history ----------------------------------------------------------------------------

  function setState(value, message) {
    const panel = $("feature");
    panel.dataset.state = value;
    $("feature-status").textContent = message || "";
    $("feature-status").className = value === "error" ? "status error" : "detail";
  }

  async function show(target) {
    const panel = $("feature");
    const seq = ++state.seq;
    state.target = target;
    panel.hidden = false;
    Object.assign(panel.dataset, { model: target.model, layer: String(target.layer), feature: String(target.feature) });
    $("feature-title").textContent = `Feature ${target.feature}`;
    $("feature-where").textContent = `${target.model} · layer ${target.layer}`;
    $("feature-sae").href = "/sae?" + new URLSearchParams({ model: target.model, layer: String(target.layer) });
    $("feature-label").textContent = "";
    $("feature-body").replaceChildren();
    setState("loading", "loading…");
    if (state.onShow) state.onShow(target);
    const url = "/api/feature" + pageUrl(target);
    let page = null, error = null;
    try {
      const response = await fetch(url, { cache: "no-store" });
      const body = await response.json().catch(() => null);
      if (response.ok && body) page = body;
      else error = (body && body.error) || `HTTP ${response.status}`;
    } catch (err) {
      error = err.message;
    }
    if (seq !== state.seq) return;  // another page was opened meanwhile
    if (error !== null) { setState("error", error); return; }
    $("feature-label").textContent = page.label == null ? "(no label)" : page.label;
    if (page.n_features != null) $("feature-where").textContent += ` of ${page.n_features} features`;
    $("feature-body").replaceChildren(...render(page));
    $("feature").scrollTop = 0;
    setState("ready", "");
  }

  function open(target, { push = true } = {}) {
    if (push && !same(target, fromUrl(location.search))) history.pushState(null, "", pageUrl(target));
    return show(target);
  }

  function hide() {
    state.seq++;
    state.target = null;
    $("feature").hidden = true;
    $("feature").dataset.state = "closed";
  }

  function close() {
    const t = state.target;
    hide();
    if (t) history.pushState(null, "", "?" + new URLSearchParams({ model: t.model, layer: String(t.layer) }));
  }

  function syncFromUrl() {
    const target = fromUrl(location.search);
    if (target) show(target); else hide();
  }

  function init({ onShow } = {}) {
    state.onShow = onShow || null;
    $("feature-close").addEventListener("click", close);
    window.addEventListener("popstate", syncFromUrl);
    syncFromUrl();
  }

  return { init, open, close, link, featureName, current: () => state.target, el, fmt, pageUrl };
})();
