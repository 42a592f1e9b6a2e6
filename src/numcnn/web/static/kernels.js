// Page 2: what a kernel highlights.  The feature map comes from /api/kernels (numcnn's conv2d).
"use strict";
(function () {
  const DEFAULTS = {image: "sample", kernel: "edge", border: "edge", values: ""};
  let state, file = null, last = null;
  const $ = (id) => document.getElementById(id);

  function kernelGrid(n, values) {
    const g = $("kgrid");
    g.innerHTML = "";
    g.style.gridTemplateColumns = `repeat(${n}, auto)`;
    for (let i = 0; i < n * n; i++) {
      const inp = NC.el("input", {type: "text", inputmode: "decimal", "aria-label": `kernel value ${i + 1}`});
      inp.value = values && values.length === n * n ? values[i] : (i === (n * n - 1) / 2 ? "1" : "0");
      g.append(inp);
    }
  }

  async function run() {
    const q = new URLSearchParams({kernel: state.kernel, border: state.border});
    if (state.kernel === "custom") q.set("values", state.values);
    try {
      let d;
      if (state.image === "upload") {
        if (!file) { NC.msg($("error"), "choose a picture file to upload", "info"); return; }
        d = await NC.api("/api/kernels?" + q, {method: "POST", body: file, headers: {"Content-Type": file.type || "application/octet-stream"}});
      } else {
        q.set("image", "sample");
        d = await NC.api("/api/kernels?" + q);
      }
      NC.msg($("error"), "");
      show(d);
    } catch (e) { NC.msg($("error"), e.message); }
    NC.setState(state, DEFAULTS);
  }

  function show(d) {
    last = d;
    const h = d.height, w = d.width, lo = d.scale.min, hi = d.scale.max;
    const flat = (rows) => Float32Array.from(rows.flat());
    const col = (v01) => NC.diverging(2 * v01 - 1);
    NC.drawMap($("in"), flat(d.input), h, w, lo, hi, col);
    NC.drawMap($("out"), flat(d.output), h, w, lo, hi, col);
    $("outtitle").textContent = `feature map (${d.kernel.name}), values ${NC.fmt(d.output_range[0])} .. ${NC.fmt(d.output_range[1])}`;
    const ks = $("kshow"); ks.innerHTML = ""; ks.style.gridTemplateColumns = `repeat(${d.kernel.values.length}, auto)`;
    d.kernel.values.flat().forEach(v => ks.append(NC.el("span", {class: "formula", style: "padding:2px 6px;background:#fbe3e3;text-align:center"}, NC.fmt(v))));
    $("ksum").textContent = `the numbers add up to ${NC.fmt(d.kernel.sum)}`;
    const bar = $("bar"), ctx = bar.getContext("2d");
    for (let i = 0; i < bar.width; i++) {
      const c = NC.diverging(2 * i / (bar.width - 1) - 1);
      ctx.fillStyle = `rgb(${c[0]},${c[1]},${c[2]})`; ctx.fillRect(i, 0, 1, bar.height);
    }
    $("lo").textContent = NC.fmt(lo); $("hi").textContent = NC.fmt(hi);
    $("explain").textContent = d.scale.explain;
  }

  function hover(ev, which) {
    if (!last) return;
    const c = ev.target, r = c.getBoundingClientRect();
    const x = Math.floor((ev.clientX - r.left) / r.width * last.width), y = Math.floor((ev.clientY - r.top) / r.height * last.height);
    if (x < 0 || y < 0 || x >= last.width || y >= last.height) return;
    $("hover").textContent = `pixel (${y}, ${x}): input ${NC.fmt(last.input[y][x])}, feature map ${NC.fmt(last.output[y][x])}`;
  }

  async function init() {
    state = NC.getState(DEFAULTS);
    if (state.image === "upload") state.image = "sample";    // a file is not in the URL
    const info = await NC.api("/api/info");
    for (const k of info.kernels) $("kernel").append(NC.el("option", {value: k.name}, k.title));
    $("kernel").append(NC.el("option", {value: "custom"}, "type your own 3x3 or 5x5"));
    $("kernel").value = state.kernel; $("border").value = state.border; $("image").value = state.image;
    const vals = state.values ? state.values.split(",") : null;
    $("ksize").value = vals && vals.length === 25 ? "5" : "3";
    kernelGrid(Number($("ksize").value), vals);
    $("custom").style.display = state.kernel === "custom" ? "" : "none";
    $("kernel").addEventListener("change", () => {
      state.kernel = $("kernel").value;
      $("custom").style.display = state.kernel === "custom" ? "" : "none";
      if (state.kernel === "custom") readCustom();
      run();
    });
    $("border").addEventListener("change", () => { state.border = $("border").value; run(); });
    $("image").addEventListener("change", () => { state.image = $("image").value; run(); });
    $("file").addEventListener("change", () => { file = $("file").files[0] || null; state.image = "upload"; $("image").value = "upload"; run(); });
    $("ksize").addEventListener("change", () => kernelGrid(Number($("ksize").value)));
    $("apply").addEventListener("click", () => { readCustom(); run(); });
    $("in").addEventListener("mousemove", (e) => hover(e));
    $("out").addEventListener("mousemove", (e) => hover(e));
    run();
  }
  function readCustom() {
    state.values = Array.from($("kgrid").querySelectorAll("input")).map(i => i.value.trim() || "0").join(",");
  }
  document.addEventListener("DOMContentLoaded", init);
})();
