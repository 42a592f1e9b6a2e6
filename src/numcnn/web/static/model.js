// Page 3: look inside a model.  Predictions, activations and saliency come from
// /api/models/{id}/predict (numcnn's forward and backward passes).
"use strict";
(function () {
  const DEFAULTS = {m: "", brush: 20, fit: true};
  let state, info = null, inflight = false, dirty = false, drawing = false, last = null, drawn = false;
  const $ = (id) => document.getElementById(id);
  let predictions = 0;

  // -- model list ---------------------------------------------------------------------------
  async function loadModels(select) {
    const d = await NC.api("/api/models");
    const sel = $("model");
    sel.innerHTML = "";
    if (!d.models.length) {
      sel.append(NC.el("option", {value: ""}, "no models yet"));
      NC.msg($("error"), "No models yet: train one here (button above) or on page 4, or start numcnn serve in a folder with run folders / with --model FILE.", "info");
      return;
    }
    for (const m of d.models) sel.append(NC.el("option", {value: m.id}, `${m.name} [${m.source}]`));
    const want = select || state.m;
    sel.value = d.models.some(m => m.id === want) ? want : d.models[0].id;
    await chooseModel(sel.value);
  }

  async function chooseModel(id) {
    state.m = id; save();
    try {
      info = await NC.api(`/api/models/${encodeURIComponent(id)}`);
      NC.msg($("error"), "");
    } catch (e) { NC.msg($("error"), e.message); return; }
    renderFilters(info.filters);
    loadThumbs();
    if (drawn) predictPad(); else if (info.test_dataset) predictTest(0);
  }

  // -- the pad ------------------------------------------------------------------------------
  function padInit() {
    const pad = $("pad"), ctx = pad.getContext("2d");
    ctx.fillStyle = "#000"; ctx.fillRect(0, 0, pad.width, pad.height);
    const pos = (e) => { const r = pad.getBoundingClientRect(); return [(e.clientX - r.left) * pad.width / r.width, (e.clientY - r.top) * pad.height / r.height]; };
    pad.addEventListener("pointerdown", (e) => {
      e.preventDefault(); pad.setPointerCapture(e.pointerId); drawing = true; last = pos(e);
      stroke(last, last);
    });
    pad.addEventListener("pointermove", (e) => {
      if (!drawing) return;
      const p = pos(e); stroke(last, p); last = p;
    });
    const end = (e) => { if (!drawing) return; drawing = false; predictPad(); };
    pad.addEventListener("pointerup", end);
    pad.addEventListener("pointercancel", end);
  }
  function stroke(a, b) {
    const ctx = $("pad").getContext("2d");
    ctx.strokeStyle = "#fff"; ctx.lineWidth = state.brush; ctx.lineCap = "round"; ctx.lineJoin = "round";
    ctx.beginPath(); ctx.moveTo(a[0], a[1]); ctx.lineTo(b[0], b[1]); ctx.stroke();
    drawn = true;
    predictPad();          // live: at most one request in flight, the latest drawing next
  }
  function clearPad() {
    const pad = $("pad"), ctx = pad.getContext("2d");
    ctx.fillStyle = "#000"; ctx.fillRect(0, 0, pad.width, pad.height); drawn = false;
  }

  function predictPad() {
    if (!info || !drawn) return;
    if (inflight) { dirty = true; return; }
    inflight = true; dirty = false;
    $("pad").toBlob(async (blob) => {
      await send(`/api/models/${encodeURIComponent(state.m)}/predict?fit=${state.fit ? 1 : 0}`,
                 {method: "POST", body: blob, headers: {"Content-Type": "image/png"}});
      inflight = false;
      if (dirty) predictPad();
    }, "image/png");
  }
  async function send(url, opts) {
    try {
      const d = await NC.api(url, opts);
      NC.msg($("error"), "");
      show(d);
    } catch (e) { NC.msg($("error"), e.message); }
  }
  function predictTest(i) {
    if (!info) return;
    send(`/api/models/${encodeURIComponent(state.m)}/predict?index=${i}`);
  }
  function upload(file) {
    if (!info || !file) return;
    send(`/api/models/${encodeURIComponent(state.m)}/predict?fit=0`,
         {method: "POST", body: file, headers: {"Content-Type": file.type || "application/octet-stream"}});
  }

  // -- results ------------------------------------------------------------------------------
  function show(d) {
    predictions += 1;
    document.body.dataset.prediction = d.label;
    document.body.dataset.predictions = String(predictions);
    const truth = d.true_label !== undefined ? ` (true label: ${d.classes[d.true_label]})` : "";
    $("answer").textContent = `prediction: ${d.label}, ${(100 * d.probabilities[d.prediction]).toFixed(1)}%${truth}`;
    const [c, h, w] = d.input.shape, x = NC.unpack(d.input);
    NC.drawMap($("seen"), x, h, w, d.input.min, d.input.max, NC.grey);
    $("seenrange").textContent = `${c}x${h}x${w}, values ${NC.fmt(d.input.min)} .. ${NC.fmt(d.input.max)}`;
    const s = NC.unpack(d.saliency);
    NC.drawMap($("sal"), s, d.saliency.shape[0], d.saliency.shape[1], 0, d.saliency.max, NC.viridis);
    const probs = $("probs"); probs.innerHTML = "";
    d.probabilities.forEach((p, i) => {
      const top = i === d.prediction ? " top" : "";
      probs.append(NC.el("span", {class: top}, d.classes[i]));
      const bar = NC.el("div", {class: "bar"}), fill = NC.el("span");
      fill.style.width = (100 * p).toFixed(1) + "%"; bar.append(fill); probs.append(bar);
      probs.append(NC.el("span", {class: "formula" + top}, (100 * p).toFixed(1) + "%"));
    });
    $("timing").textContent = `computed by numcnn in ${d.compute_ms.toFixed(1)} ms (forward with every layer's output, and the backward pass for the saliency)`;
    renderLayers(d.layers);
  }

  function renderLayers(layers) {
    const root = $("layers"); root.innerHTML = "";
    for (const L of layers) {
      const box = NC.el("div", {class: "layer card" + (L.kind === "block" ? " block" : "")});
      if (L.depth) box.style.marginLeft = Math.min(3, L.depth) * 22 + "px";   // inside a block
      const shape = L.shape.join("x") + (L.shown.join("x") !== L.shape.join("x") ? ` (showing ${L.shown.join("x")})` : "");
      const what = L.name === "Residual" ? " = body + shortcut, added" : L.name === "Concat" ? " = the branches, joined along the channels" : "";
      box.append(NC.el("h3", {}, `${L.path}: ${L.repr} -> ${shape}${what}`));
      const a = NC.unpack(L.data), lo = L.data.min, hi = L.data.max;
      if (L.shown.length === 3) {
        const [c, h, w] = L.shown, maps = NC.el("div", {class: "maps"});
        for (let i = 0; i < c; i++) {
          const cv = NC.canvas("", `channel ${i}`);
          NC.drawMap(cv, a, h, w, lo, hi, NC.viridis, i * h * w);
          maps.append(cv);
        }
        box.append(maps);
      } else {
        const cv = NC.canvas("vec", `${a.length} values, ${NC.fmt(lo)} .. ${NC.fmt(hi)}`);
        NC.drawMap(cv, a, 1, a.length, lo, hi, NC.viridis);
        box.append(cv, NC.el("div", {class: "muted"}, `${a.length} values from ${NC.fmt(lo)} to ${NC.fmt(hi)}`));
      }
      root.append(box);
    }
  }

  function renderFilters(filters) {
    const root = $("filters"); root.innerHTML = "";
    for (const F of filters) {
      const box = NC.el("div", {class: "card"});
      box.append(NC.el("h3", {}, `${F.path}: ${F.repr}`));
      const cv = NC.canvas();
      NC.tileFilters(cv, NC.unpack(F.data), F.data.shape);
      const scale = Math.max(2, Math.min(12, Math.floor(300 / Math.max(cv.width, cv.height))));
      cv.style.width = cv.width * scale + "px"; cv.style.height = cv.height * scale + "px";
      box.append(cv, NC.el("div", {class: "muted"}, `${F.shape.join("x")} (filters x channels x kh x kw)`));
      root.append(box);
    }
    if (!filters.length) root.append(NC.el("p", {class: "muted"}, "this model has no conv layers"));
  }

  async function loadThumbs() {
    const t = $("thumbs"); t.innerHTML = "";
    if (!info.test_dataset) { $("testinfo").textContent = "(none of this model's input size)"; return; }
    const d = await NC.api(`/api/datasets/${info.test_dataset}/test-images?start=0&count=32`);
    $("testinfo").textContent = `(${info.test_dataset}, ${d.total} in all; click one)`;
    const x = NC.unpack(d.images), [n, c, h, w] = d.images.shape;
    for (let i = 0; i < n; i++) {
      const cv = NC.canvas("", `test image ${i}, label ${d.labels[i]}`);
      NC.drawMap(cv, x, h, w, 0, d.images.max || 255, NC.grey, i * c * h * w);
      cv.addEventListener("click", () => predictTest(i));
      t.append(cv);
    }
  }

  function save() { NC.setState(state, DEFAULTS); }

  async function quickTrain() {
    $("quick").disabled = true;
    try {
      await NC.post("/api/train", {dataset: "digits", model: "digits-cnn", epochs: 4, batch_size: 32});
      for (;;) {
        const s = await NC.api("/api/train");
        $("quickinfo").textContent = `training: epoch ${s.progress.epoch}/${s.progress.epochs}, batch ${s.progress.batch}/${s.progress.batches}`;
        if (s.state === "done" || s.state === "stopped") { $("quickinfo").textContent = "done"; await loadModels(s.model_id); break; }
        if (s.state === "failed") throw new Error(s.error);
        await new Promise(r => setTimeout(r, 500));
      }
    } catch (e) { NC.msg($("error"), e.message); }
    $("quick").disabled = false;
  }

  function init() {
    state = NC.getState(DEFAULTS);
    $("brush").value = state.brush; $("fit").checked = state.fit;
    $("brush").addEventListener("input", () => { state.brush = Number($("brush").value); save(); });
    $("fit").addEventListener("change", () => { state.fit = $("fit").checked; save(); predictPad(); });
    $("clear").addEventListener("click", clearPad);
    $("file").addEventListener("change", () => upload($("file").files[0]));
    $("model").addEventListener("change", () => chooseModel($("model").value));
    $("quick").addEventListener("click", quickTrain);
    padInit();
    loadModels().catch(e => NC.msg($("error"), e.message));
  }
  document.addEventListener("DOMContentLoaded", init);
})();
