// The SAE page, /sae?model=&layer=: one model × layer's SAE as a whole (GET /api/sae): the eval card (sae_evals)
// with the density histogram drawn here as SVG, label quality (feature_labels), SFAL NDCG (alignment_scores) and
// links to the pages of the densest, rarest and best-labelled features. Linked from the map's header and from
// every feature page. Strings from the lake become text nodes only (FeaturePage.el: never HTML).
"use strict";
/* global FeaturePage */

const SaePage = (() => {
  const { el, fmt } = FeaturePage;
  const INDEX = /^[0-9]{1,9}$/;
  const SVG = "http://www.w3.org/2000/svg";
  const $ = (id) => document.getElementById(id);

  function fromUrl(search) {
    const params = new URLSearchParams(search);
    const model = params.get("model"), layer = params.get("layer");
    return model && INDEX.test(layer || "") ? { model, layer: Number(layer) } : null;
  }

  const mapUrl = (t) => "/?" + new URLSearchParams({ model: t.model, layer: String(t.layer) });
  const featureUrl = (t, feature) => "/" + FeaturePage.pageUrl({ ...t, feature });
  const percent = (x) => (x == null ? "n/a" : `${fmt(100 * x)}%`);
  const signed = (x) => (x == null ? "n/a" : `${x > 0 ? "+" : ""}${fmt(x)}`);

  // --- sections ---------------------------------------------------------------------------------------------

  function statusLine(section) {
    if (!section) return el("p", { class: "status error" }, "not in the server's answer");
    if (section.status === "missing" || section.status === "none") {
      return el("p", { class: `status ${section.status}` }, section.message);
    }
    return el("p", { class: "status error" }, `error: ${section.message || "unknown"}`);
  }

  function block(name, title, section, render) {
    const status = section ? section.status : "error";
    return el("section", { class: "fp-section", data: { section: name, status } }, el("h3", {}, title),
      status === "ok" ? render(section) : statusLine(section));
  }

  function facts(pairs) {
    return el("dl", { class: "facts" }, pairs.map(([term, value]) => [el("dt", {}, term), el("dd", {}, value)]));
  }

  // The headline numbers: [column, name, shown value, what it means].
  function headline(s) {
    const l0 = `mean active latents per token (p10 ${fmt(s.l0_p10)}, median ${fmt(s.l0_p50)}, p90 ` +
      `${fmt(s.l0_p90)}, max ${fmt(s.l0_max)})`;
    return [
      ["ce_loss_score", "CE loss score", fmt(s.ce_loss_score), "the share of the model's next-token loss the SAE " +
        "keeps, against zeroing its hook: 1 is the clean model, 0 as bad as zeroing, below 0 worse"],
      ["delta_lm_loss", "delta LM loss", `${signed(s.delta_lm_loss)} nats`, "CE loss with the SAE spliced in " +
        "minus the clean model's, per token: lower is better"],
      ["kl_div_score", "KL score", fmt(s.kl_div_score), "the same share on the KL divergence of the next-token " +
        "distributions from the clean model's"],
      ["explained_variance", "explained variance", fmt(s.explained_variance), "the share of the activations' " +
        "variance the reconstruction explains"],
      ["l0", "L0", fmt(s.l0), l0],
      ["dead_fraction", "dead latents", percent(s.dead_fraction), "never active on the held-out tokens"],
      ["dense_fraction", "dense latents", percent(s.dense_fraction), "active on more than 10% of the tokens"],
    ];
  }

  function ceNote(s) {
    if (s.ce_loss_flag === "negative") return "worse than zeroing the hook: a broken or mismatched SAE";
    if (s.ce_loss_flag === "low") {
      return `below the floor ${fmt(s.low_ce_loss_score)}: the SAE keeps little of the loss`;
    }
    return null;
  }

  function renderEvals(s) {
    const flag = s.ce_loss_flag || "unknown";
    const tiles = headline(s).map(([key, name, value, meaning]) => el("div",
      { class: `tile${key === "ce_loss_score" ? ` ce ${flag}` : ""}`, data: { metric: key } },
      el("div", { class: "tile-value" }, value), el("div", { class: "tile-name" }, name),
      el("div", { class: "detail" }, meaning), key === "ce_loss_score" && ceNote(s)
        ? el("div", { class: "tile-flag" }, ceNote(s)) : null));
    return [el("p", { class: `verdict ${flag}` }, s.verdict == null ? "(no verdict)" : s.verdict),
      el("div", { class: "tiles" }, tiles),
      el("div", { class: "triple" },
        el("div", {}, el("h4", {}, "Evaluated on"), facts([["hook", s.hook_name ?? "n/a"], ["latents", fmt(s.d_sae)],
          ["corpus", s.corpus ?? "n/a"], ["contexts", `${fmt(s.n_contexts)} × ${fmt(s.context_size)} tokens`],
          ["held out from", `document ${fmt(s.held_out_from_document)}`], ["tokens", fmt(s.n_tokens)],
          ["seconds", fmt(s.seconds)]])),
        el("div", {}, el("h4", {}, "Reconstruction"), facts([["MSE", fmt(s.mse)], ["cosine", fmt(s.cossim)],
          ["L2 in / out", `${fmt(s.l2_norm_in)} / ${fmt(s.l2_norm_out)}`], ["L2 ratio", fmt(s.l2_ratio)],
          ["rel. bias", fmt(s.relative_reconstruction_bias)], ["L1", fmt(s.l1)]])),
        el("div", {}, el("h4", {}, "Spliced in (nats per token)"), facts([
          ["CE clean", fmt(s.ce_loss_without_sae)], ["CE with SAE", fmt(s.ce_loss_with_sae)],
          ["CE hook zeroed", fmt(s.ce_loss_with_ablation)], ["KL with SAE", fmt(s.kl_div_with_sae)],
          ["KL hook zeroed", fmt(s.kl_div_with_ablation)]])))];
  }

  // An SVG element; attributes set as given, children as text nodes or elements.
  function svg(tag, attrs, ...children) {
    const node = document.createElementNS(SVG, tag);
    for (const [key, value] of Object.entries(attrs || {})) node.setAttribute(key, String(value));
    for (const child of children.flat()) {
      if (child != null) node.appendChild(child instanceof Node ? child : document.createTextNode(String(child)));
    }
    return node;
  }

  // Live latents per log10-density bin: bars over the bin edges, a tick per power of ten, the dense threshold.
  function renderDensity(s) {
    const [W, H, L, R, T, B] = [640, 196, 44, 12, 12, 36];
    const lo = s.edges[0], hi = s.edges[s.edges.length - 1];
    const top = Math.max(1, ...s.counts);
    const x = (v) => L + ((v - lo) / (hi - lo || 1)) * (W - L - R);
    const y = (c) => H - B - (c / top) * (H - T - B);
    const bars = s.counts.map((count, i) => svg("rect", { class: "bar", "data-count": count, x: x(s.edges[i]),
      y: y(count), width: Math.max(1, x(s.edges[i + 1]) - x(s.edges[i]) - 1), height: H - B - y(count) },
    svg("title", {}, `log10 density ${fmt(s.edges[i])} to ${fmt(s.edges[i + 1])}: ${count} latents`)));
    const ticks = [];
    for (let k = Math.ceil(lo); k <= Math.floor(hi); k++) {
      ticks.push(svg("line", { class: "tick", x1: x(k), x2: x(k), y1: H - B, y2: H - B + 4 }),
        svg("text", { class: "tick-label", x: x(k), y: H - B + 16, "text-anchor": "middle" }, `1e${k}`));
    }
    const dense = s.dense_log10 >= lo && s.dense_log10 <= hi ? [
      svg("line", { class: "dense", x1: x(s.dense_log10), x2: x(s.dense_log10), y1: T, y2: H - B }),
      svg("text", { class: "tick-label", x: x(s.dense_log10) - 4, y: T + 10, "text-anchor": "end" }, "dense →")] : [];
    const chart = svg("svg", { class: "density", viewBox: `0 0 ${W} ${H}`, role: "img",
      "aria-label": "live latents by log10 feature density" }, bars,
    svg("line", { class: "axis-line", x1: L, x2: W - R, y1: H - B, y2: H - B }), ticks, dense,
    svg("text", { class: "tick-label", x: L - 6, y: T + 4, "text-anchor": "end" }, String(top)),
    svg("text", { class: "tick-label", x: L - 6, y: H - B, "text-anchor": "end" }, "0"),
    svg("text", { class: "tick-label", x: (L + W - R) / 2, y: H - 2, "text-anchor": "middle" },
      "fraction of held-out tokens a latent is active on (log scale)"));
    const dead = s.n_dead == null ? "" : `; dead latents (never active, ${s.n_dead}) are not drawn`;
    return [chart, el("p", { class: "detail" }, `${s.n_live} live latents by density${dead}`)];
  }

  function renderLabels(s) {
    const shown = `${s.n_rows} features in feature_labels (${s.unlabelled} without a label); mean score of the ` +
      `shown labels ${fmt(s.mean_score)} over the ${s.n_scored} scored`;
    return [el("p", {}, shown),
      el("table", { class: "scores label-sources" }, el("tr", {}, el("th", {}, "source"), el("th", {}, "wins"),
        el("th", {}, "mean score of its wins"), el("th", {}, "mean score as a candidate (scored)")),
      s.sources.map((r) => el("tr", { data: { source: r.source } }, el("td", {}, r.source), el("td", {}, fmt(r.wins)),
        el("td", {}, fmt(r.mean_score)), el("td", {}, `${fmt(r.candidate_mean_score)} (${r.candidate_scored})`)))),
      el("p", { class: "detail" }, "A feature shows its best-scoring candidate; the score is the held-out " +
        "detection score (embedding AUROC on held-out windows): 0.5 is chance, 1 perfect.")];
  }

  function renderAlignment(s) {
    return [el("table", { class: "scores" }, el("tr", {}, el("th", {}, "embedding model"), el("th", {}, "mean NDCG"),
      el("th", {}, "median NDCG"), el("th", {}, "features"), el("th", {}, "mean over all")),
    s.models.map((m) => el("tr", { data: { model: m.embedding_model } }, el("td", {}, m.embedding_model),
      el("td", {}, fmt(m.mean_ndcg)), el("td", {}, fmt(m.median_ndcg)),
      el("td", {}, `${m.n_explained} of ${m.n_features}`), el("td", {}, fmt(m.mean_ndcg_all))))),
    el("p", { class: "detail" }, `Mean and median over the ${s.over} (the others have no embedding, so their NDCG ` +
      "says nothing of a label); the last column averages every feature, as the asset's metadata does.")];
  }

  function featureList(t, value) {
    return (s) => el("ol", { class: "links" }, s.features.map((r) => el("li", {},
      el("a", { class: "feature-link", href: featureUrl(t, r.feature), data: { feature: String(r.feature) } },
        FeaturePage.featureName(r.feature, r.label)), " ", el("span", { class: "value" }, value(r)))));
  }

  function render(t, page) {
    const s = page.sections || {};
    return [block("evals", "Evaluation (sae_evals)", s.evals, renderEvals),
      block("density", "Feature density on the held-out tokens", s.density, renderDensity),
      el("div", { class: "pair" }, block("labels", "Label quality", s.labels, renderLabels),
        block("alignment", "SFAL NDCG", s.alignment, renderAlignment)),
      el("div", { class: "triple" },
        block("densest", "Densest features", s.densest, featureList(t, (r) => `density ${fmt(r.density)}`)),
        block("rarest", "Rarest live features", s.rarest, featureList(t, (r) => `density ${fmt(r.density)}`)),
        block("best_labelled", "Best-labelled features", s.best_labelled,
          featureList(t, (r) => `${r.label_source || "n/a"} ${fmt(r.score)}`)))];
  }

  // --- loading ----------------------------------------------------------------------------------------------

  function setState(value, message) {
    $("sae").dataset.state = value;
    $("sae-status").textContent = message || "";
    $("sae-status").className = value === "error" ? "status error" : "detail";
  }

  async function main() {
    const t = fromUrl(location.search);
    if (!t) { setState("error", "open /sae?model=<model key>&layer=<layer>"); return; }
    Object.assign($("sae").dataset, { model: t.model, layer: String(t.layer) });
    $("sae-title").textContent = `SAE of ${t.model} · layer ${t.layer}`;
    document.title = `SAE ${t.model} layer ${t.layer}`;
    $("sae-map").href = mapUrl(t);
    let page = null, error = null;
    try {
      const response = await fetch("/api/sae?" + new URLSearchParams({ model: t.model, layer: String(t.layer) }),
        { cache: "no-store" });
      const body = await response.json().catch(() => null);
      if (response.ok && body) page = body;
      else error = (body && body.error) || `HTTP ${response.status}`;
    } catch (err) {
      error = err.message;
    }
    if (error !== null) { setState("error", error); return; }
    $("sae-where").textContent = page.n_features == null ? "" : `${page.n_features} features`;
    $("sae").replaceChildren(...render(t, page));
    setState("ready", "");
  }

  return { main, fromUrl };
})();

SaePage.main().catch((err) => {
  document.getElementById("sae").dataset.state = "error";
  document.getElementById("sae-status").textContent = `error: ${err.message}`;
});
