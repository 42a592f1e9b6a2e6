// Page 4: train live.  The run is on the server (POST /api/train); this page listens to its
// status with an EventSource, closed when the page is left.
"use strict";
(function () {
  const DEFAULTS = {dataset: "digits", model: "digits-cnn", epochs: 5, batch_size: 32, optimizer: "adam", lr: 0.002};
  const LR = {adam: 0.002, adamw: 0.002, sgd: 0.05};
  let state, source = null, info = null;
  const $ = (id) => document.getElementById(id);

  function readForm() {
    state.dataset = $("dataset").value; state.model = $("model").value;
    state.epochs = Number($("epochs").value); state.batch_size = Number($("batch_size").value);
    state.optimizer = $("optimizer").value; state.lr = Number($("lr").value);
    NC.setState(state, DEFAULTS);
  }

  async function start(resume) {
    readForm();
    try {
      const body = resume ? {resume: true, epochs: state.epochs} :
        {dataset: state.dataset, model: state.model, epochs: state.epochs, batch_size: state.batch_size,
         optimizer: state.optimizer, lr: state.lr};
      if (!resume && state.model === "architecture") {
        try { body.architecture = JSON.parse($("arch").value); }
        catch (e) { throw new Error("the architecture is not valid JSON: " + e.message); }
      }
      const s = await NC.post("/api/train", body);
      NC.msg($("error"), "");
      show(s); listen();
    } catch (e) { NC.msg($("error"), e.message); }
  }

  function listen() {
    close();
    source = new EventSource("/api/train/events");
    source.onmessage = (ev) => {
      const s = JSON.parse(ev.data);
      show(s);
      if (!["starting", "running", "finishing"].includes(s.state)) close();
    };
    source.onerror = () => { close(); setTimeout(poll, 1000); };
  }
  function close() { if (source) { source.close(); source = null; } }
  async function poll() {
    try {
      const s = await NC.api("/api/train");
      show(s);
      if (["starting", "running", "finishing"].includes(s.state)) listen();
    } catch (e) { NC.msg($("error"), e.message); }
  }

  function show(s) {
    document.body.dataset.state = s.state;
    const running = ["starting", "running", "finishing"].includes(s.state);
    $("start").disabled = running; $("stop").disabled = !running;
    $("resume").disabled = !s.can_resume;
    if (s.state === "idle") return;
    const p = s.progress, h = s.history;
    const frac = ((p.epoch - 1) + (p.batches ? p.batch / p.batches : 0)) / p.epochs;
    $("bar").style.width = (100 * (s.state === "done" ? 1 : Math.min(1, frac))).toFixed(1) + "%";
    const last = h.epoch && h.epoch.length ? h.epoch.length - 1 : -1;
    let text = `${s.state}: ${s.config.model} on ${s.config.dataset}, epoch ${Math.min(p.epoch, p.epochs)}/${p.epochs}, ` +
      `batch ${p.batch}/${p.batches}, ${Math.round(p.images_per_s).toLocaleString()} images/s, ${p.elapsed.toFixed(1)} s`;
    if (last >= 0) text += ` | last epoch: loss ${h.train_loss[last].toFixed(3)}, val acc ${(100 * h.val_acc[last]).toFixed(1)}%`;
    if (s.error) text += ` | ${s.error}`;
    $("status").textContent = text;
    $("folder").textContent = `run folder: ${s.run_folder}`;
    document.body.dataset.epochsDone = String(h.epoch ? h.epoch.length : 0);
    if (h.epoch || s.state !== "idle") {
      h.train_loss = h.train_loss || []; h.val_loss = h.val_loss || []; h.train_acc = h.train_acc || []; h.val_acc = h.val_acc || [];
      NC.lineChart($("loss"), "loss", [{name: "train", values: h.train_loss, colour: "#1565c0"},
                                       {name: "validation", values: h.val_loss, colour: "#e65100", dash: true}]);
      NC.lineChart($("acc"), "accuracy", [{name: "train", values: h.train_acc, colour: "#1565c0"},
                                          {name: "validation", values: h.val_acc, colour: "#e65100", dash: true}], "", 1);
    }
    const fl = $("filters"); fl.innerHTML = "";
    for (const f of s.filters) {
      const row = NC.el("div", {class: "epochrow"});
      row.append(NC.el("span", {class: "lab"}, f.epoch === 0 ? "start" : `epoch ${f.epoch}`));
      const cv = NC.canvas(), [O, C, kh, kw] = f.data.shape;
      // one row per epoch: the filters side by side (a row per input channel)
      NC.tileFilters(cv, transpose(NC.unpack(f.data), O, C, kh * kw), [C, O, kh, kw], O);
      const scale = Math.max(1, Math.min(6, Math.floor((Math.min(window.innerWidth, 900) - 110) / cv.width)));
      cv.style.width = cv.width * scale + "px"; cv.style.height = cv.height * scale + "px";
      row.append(cv); fl.append(row);
    }
    if (s.result) showResult(s);
  }
  function transpose(w, O, C, k) {
    const out = new Float32Array(w.length);
    for (let o = 0; o < O; o++) for (let c = 0; c < C; c++) for (let i = 0; i < k; i++) out[(c * O + o) * k + i] = w[(o * C + c) * k + i];
    return out;
  }

  function showResult(s) {
    const r = s.result;
    $("result").style.display = "";
    const t = $("conf"); t.innerHTML = "";
    const head = NC.el("tr"); head.append(NC.el("th", {}, "true \\ pred"));
    r.classes.forEach(c => head.append(NC.el("th", {}, c))); t.append(head);
    const max = Math.max(1, ...r.confusion.flat());
    r.confusion.forEach((row, i) => {
      const tr = NC.el("tr"); tr.append(NC.el("th", {}, r.classes[i]));
      row.forEach((v, j) => {
        const td = NC.el("td", {}, String(v));
        const a = v / max;
        td.style.background = i === j ? `rgba(56,142,60,${0.15 + 0.6 * a})` : (v ? `rgba(198,40,40,${0.15 + 0.6 * a})` : "");
        tr.append(td);
      });
      t.append(tr);
    });
    const w = $("wrong"); w.innerHTML = "";
    for (const m of r.misclassified) {
      const f = NC.el("figure"), cv = NC.canvas();
      const [c, h, ww] = m.image.shape;
      NC.drawMap(cv, NC.unpack(m.image), h, ww, 0, Math.max(1, m.image.max), NC.grey);
      f.append(cv, NC.el("figcaption", {}, `${r.classes[m.label]} -> ${r.classes[m.pred]} (${(100 * m.prob).toFixed(0)}%)`));
      w.append(f);
    }
    if (!r.misclassified.length) w.append(NC.el("p", {class: "muted"}, "none: every test image is right"));
    if (s.model_id) $("inspect").href = "/model?m=" + encodeURIComponent(s.model_id);
    $("inspect").textContent = `look inside this model (page 3): test accuracy ${(100 * r.accuracy).toFixed(2)}%`;
  }

  // a small CNN for the chosen dataset, as a starting point to edit
  function example() {
    const d = info.datasets.find(x => x.name === $("dataset").value) || info.datasets[0];
    const [c, h, w] = d.shape, flat = 8 * Math.floor(h / 2) * Math.floor(w / 2);
    return JSON.stringify({input_shape: d.shape, layers: [
      {type: "Conv2D", in_channels: c, out_channels: 8, kernel_size: 3, padding: 1}, {type: "ReLU"},
      {type: "MaxPool2D", kernel_size: 2}, {type: "Flatten"},
      {type: "Dense", in_features: flat, out_features: d.classes.length}]}, null, 1);
  }
  function showArch() { $("archbox").style.display = $("model").value === "architecture" ? "" : "none"; }

  async function init() {
    state = NC.getState(DEFAULTS);
    info = await NC.api("/api/info");
    for (const d of info.datasets) $("dataset").append(NC.el("option", {value: d.name}, `${d.name} (${d.shape.join("x")})`));
    for (const p of info.presets) $("model").append(NC.el("option", {value: p}, p));
    $("model").append(NC.el("option", {value: "architecture"}, "your architecture (JSON)"));
    for (const k of ["dataset", "model", "epochs", "batch_size", "optimizer", "lr"]) $(k).value = state[k];
    $("optimizer").addEventListener("change", () => { $("lr").value = LR[$("optimizer").value]; readForm(); });
    $("dataset").addEventListener("change", () => {
      const d = $("dataset").value;
      if ($("model").value !== "architecture") $("model").value = d === "digits" ? "digits-cnn" : "lenet5";
      readForm();
    });
    for (const k of ["model", "epochs", "batch_size", "lr"]) $(k).addEventListener("change", readForm);
    $("model").addEventListener("change", showArch);
    $("dataset").addEventListener("change", () => { $("arch").value = example(); showArch(); });
    $("arch").value = example(); showArch();
    $("start").addEventListener("click", () => start(false));
    $("resume").addEventListener("click", () => start(true));
    $("stop").addEventListener("click", async () => {
      try { await NC.post("/api/train/stop", {}); } catch (e) { NC.msg($("error"), e.message); }
    });
    window.addEventListener("pagehide", close);
    poll();
  }
  document.addEventListener("DOMContentLoaded", init);
})();
