// Page 5: the summary table of a model (GET /api/models/{id}) or a preset (GET /api/presets/...).
"use strict";
(function () {
  const DEFAULTS = {which: "preset:lenet5", dataset: "mnist-5k"};
  let state;
  const $ = (id) => document.getElementById(id);
  const human = (n) => n >= 1e9 ? (n / 1e9).toFixed(2) + "G" : n >= 1e6 ? (n / 1e6).toFixed(2) + "M" : n >= 1e3 ? (n / 1e3).toFixed(2) + "k" : String(n);

  async function show() {
    state.which = $("which").value; state.dataset = $("dataset").value;
    NC.setState(state, DEFAULTS);
    $("dataset").disabled = !state.which.startsWith("preset:");
    try {
      let s;
      if (state.which.startsWith("preset:")) {
        s = (await NC.api(`/api/presets/${encodeURIComponent(state.which.slice(7))}/summary?dataset=${encodeURIComponent(state.dataset)}`)).summary;
      } else {
        s = (await NC.api(`/api/models/${encodeURIComponent(state.which.slice(6))}`)).summary;
      }
      NC.msg($("error"), "");
      render(s);
    } catch (e) { NC.msg($("error"), e.message); $("table").innerHTML = ""; $("total").textContent = ""; }
  }

  function render(s) {
    const t = $("table"); t.innerHTML = "";
    const head = NC.el("tr");
    [["#", ""], ["layer", ""], ["output shape", ""], ["params", "num"], ["FLOPs", "num"]].forEach(([h, c]) => head.append(NC.el("th", {class: c}, h)));
    t.append(head);
    const first = NC.el("tr");
    ["", "input", s.input_shape.join("x"), "", ""].forEach((v, i) => first.append(NC.el("td", {class: i > 2 ? "num" : ""}, v)));
    t.append(first);
    for (const r of s.layers) {
      const tr = NC.el("tr");
      const name = NC.el("td", {class: "formula"}, r.repr);
      if (r.depth) { name.style.paddingLeft = (8 + 18 * r.depth) + "px"; tr.className = "inner"; }
      tr.append(NC.el("td", {}, String(r.index)), name,
                NC.el("td", {}, r.output_shape.join("x")), NC.el("td", {class: "num"}, r.params.toLocaleString()),
                NC.el("td", {class: "num", title: r.flops.toLocaleString()}, human(r.flops)));
      t.append(tr);
    }
    $("total").textContent = `total: ${s.total_params.toLocaleString()} parameters, ${human(s.total_flops)} FLOPs per image (forward)`;
    document.body.dataset.layers = String(s.layers.filter(r => !r.depth).length);
  }

  async function init() {
    state = NC.getState(DEFAULTS);
    const [info, models] = await Promise.all([NC.api("/api/info"), NC.api("/api/models")]);
    const sel = $("which");
    const g1 = NC.el("optgroup", {label: "models on this server"});
    for (const m of models.models) g1.append(NC.el("option", {value: "model:" + m.id}, m.name));
    const g2 = NC.el("optgroup", {label: "presets (untrained)"});
    for (const p of info.presets) g2.append(NC.el("option", {value: "preset:" + p}, p));
    if (models.models.length) sel.append(g1);
    sel.append(g2);
    for (const d of info.datasets) $("dataset").append(NC.el("option", {value: d.name}, `${d.name} (${d.shape.join("x")})`));
    sel.value = state.which; if (!sel.value) sel.value = DEFAULTS.which;
    $("dataset").value = state.dataset;
    sel.addEventListener("change", show); $("dataset").addEventListener("change", show);
    show();
  }
  document.addEventListener("DOMContentLoaded", () => init().catch(e => NC.msg($("error"), e.message)));
})();
