// Page 1: watch a convolution.  Every number comes from POST /api/conv (numcnn's conv_steps).
"use strict";
(function () {
  const DEFAULTS = {size: 5, depth: 3, filters: 2, kernel: 3, stride: 2, padding: 1, dilation: 1,
                    seed: "deck", speed: 2, play: true, step: 0};
  const FIELDS = ["size", "depth", "filters", "kernel", "stride", "padding", "dilation"];
  let state, data = null, edits = {}, timer = null, pending = 0;
  const $ = (id) => document.getElementById(id);

  function cellSize(cols) {
    const avail = Math.min(window.innerWidth, 1240) - 48;
    return Math.max(16, Math.min(30, Math.floor(avail / (cols + 1))));
  }

  function grid(rows, cols, cls, fill) {
    const g = NC.el("div", {class: "grid " + cls});
    g.style.gridTemplateColumns = `repeat(${cols}, var(--cell))`;
    for (let r = 0; r < rows; r++) for (let c = 0; c < cols; c++) g.appendChild(fill(r, c));
    return g;
  }

  async function load() {
    const req = {seed: state.seed};
    FIELDS.forEach(f => req[f] = state[f]);
    Object.assign(req, edits);
    const ticket = ++pending;
    try {
      const d = await NC.post("/api/conv", req);
      if (ticket !== pending) return;
      data = d;
      NC.msg($("error"), "");
      state.step = Math.min(state.step, d.steps.length - 1);
      render();
    } catch (e) {
      if (ticket !== pending) return;
      data = null;
      NC.msg($("error"), e.message);
      $("figure").innerHTML = ""; $("detail").innerHTML = "";
      $("formula").textContent = "";
      document.body.dataset.outSize = "";
    }
    save();
  }

  function save() {
    NC.setState({...state}, DEFAULTS);
  }

  function startEdit(cell, current, commit) {
    if (cell.querySelector("input")) return;
    stop();
    const inp = NC.el("input", {type: "text", inputmode: "decimal", "aria-label": "your number"});
    inp.value = NC.fmt(current);
    cell.textContent = ""; cell.appendChild(inp); inp.focus(); inp.select();
    const done = (ok) => {
      const v = Number(inp.value);
      if (ok && inp.value.trim() !== "" && Number.isFinite(v)) commit(v); else render();
    };
    inp.addEventListener("keydown", (e) => { if (e.key === "Enter") done(true); if (e.key === "Escape") done(false); });
    inp.addEventListener("blur", () => done(true));
  }

  function ensureEdits() {
    if (!edits.x) edits.x = JSON.parse(JSON.stringify(data.x));
    if (!edits.weight) edits.weight = JSON.parse(JSON.stringify(data.weight));
    if (!edits.bias) edits.bias = data.bias.slice();
  }

  function render() {
    const d = data, s = d.sizes, p = s.padding, span = d.taps.length;
    const hp = d.x_padded[0].length, ho = d.output_shape[1];
    document.documentElement.style.setProperty("--cell", cellSize(hp) + "px");
    $("formula").innerHTML = "";
    $("formula").append(`output size = 1 + (n + 2p - k) / stride = ${d.output_size.formula}` +
      ` -> output volume ${ho}x${ho}x${s.filters}`);
    if (d.output_size.note) $("formula").append(NC.el("div", {class: "muted"}, d.output_size.note));
    document.body.dataset.outSize = `${ho}x${ho}x${s.filters}`;
    const step = d.steps[state.step];
    const fig = $("figure");
    fig.innerHTML = "";
    // input volume with its padding; the window of the current step outlined on every channel
    const vin = NC.el("div", {class: "vol"});
    vin.append(NC.el("h3", {}, `Input volume (+pad ${p})`), NC.el("div", {class: "sub"}, `${hp}x${hp}x${s.depth}`));
    d.x_padded.forEach((ch, c) => {
      const box = NC.el("div", {class: "chan"});
      box.append(NC.el("div", {class: "lab"}, `x[:,:,${c}]`));
      box.append(grid(hp, hp, "input", (r, col) => {
        const e = NC.el("div", {class: "c"}, NC.fmt(ch[r][col]));
        const pad = r < p || col < p || r >= hp - p || col >= hp - p;
        if (pad) e.classList.add("pad");
        const wr = r - step.origin[0], wc = col - step.origin[1];
        if (wr >= 0 && wc >= 0 && wr < span && wc < span) {
          e.classList.add("win");
          if (d.taps[wr][wc]) e.classList.add("tap");
        }
        if (!pad) {
          e.classList.add("edit"); e.title = "click to type your own number";
          e.addEventListener("click", () => startEdit(e, ch[r][col], (v) => {
            ensureEdits(); edits.x[c][r - p][col - p] = v; load();
          }));
        }
        return e;
      }));
      vin.append(box);
    });
    fig.append(vin);
    // filters and biases
    for (let o = 0; o < s.filters; o++) {
      const vf = NC.el("div", {class: "vol"});
      vf.append(NC.el("h3", {}, `Filter W${o}`),
        NC.el("div", {class: "sub"}, `${s.kernel}x${s.kernel}x${s.depth}` + (s.dilation > 1 ? `, dilation ${s.dilation} (spread to ${span}x${span})` : "")));
      d.weight_spread[o].forEach((ch, c) => {
        const box = NC.el("div", {class: "chan"});
        box.append(NC.el("div", {class: "lab"}, `w${o}[:,:,${c}]`));
        const g = grid(span, span, "filter" + (o === step.o ? " active" : ""), (r, col) => {
          const e = NC.el("div", {class: "c"}, NC.fmt(ch[r][col]));
          if (!d.taps[r][col]) { e.classList.add("off"); return e; }
          e.title = "click to type your own number";
          e.addEventListener("click", () => startEdit(e, ch[r][col], (v) => {
            ensureEdits(); edits.weight[o][c][r / s.dilation][col / s.dilation] = v; load();
          }));
          return e;
        });
        box.append(g); vf.append(box);
      });
      const b = NC.el("div", {class: "bias"}, `bias b${o} = `);
      const bv = NC.el("span", {class: "c", title: "click to type your own number", style: "cursor:text;text-decoration:underline dotted"}, NC.fmt(d.bias[o]));
      bv.addEventListener("click", () => startEdit(bv, d.bias[o], (v) => { ensureEdits(); edits.bias[o] = v; load(); }));
      b.append(bv); vf.append(b);
      fig.append(vf);
    }
    // output volume, filled in up to the current step
    const vo = NC.el("div", {class: "vol"});
    vo.append(NC.el("h3", {}, "Output volume"), NC.el("div", {class: "sub"}, `${ho}x${ho}x${s.filters}`));
    const perO = ho * ho;
    d.output.forEach((ch, o) => {
      const box = NC.el("div", {class: "chan"});
      box.append(NC.el("div", {class: "lab"}, `o[:,:,${o}]`));
      box.append(grid(ho, ho, "out", (r, col) => {
        const k = o * perO + r * ho + col;
        const e = NC.el("div", {class: "c", "data-o": o, "data-y": r, "data-x": col, "data-k": k, "data-v": ch[r][col]},
                        NC.fmt(ch[r][col]));
        if (k < state.step) e.classList.add("done");
        if (k === state.step) e.classList.add("now");
        e.addEventListener("mouseenter", () => { if (!timer && k !== state.step) select(k); });
        e.addEventListener("click", () => { stop(); select(k); });
        return e;
      }));
      vo.append(box);
    });
    fig.append(vo);
    renderDetail(step);
    $("stepinfo").textContent = `step ${state.step + 1} of ${d.steps.length}`;
    document.body.dataset.step = String(state.step);
  }

  function renderDetail(st) {
    const d = data, det = $("detail"), span = d.taps.length;
    det.innerHTML = "";
    const sums = st.channel_sums.map(v => `(${NC.fmt(v)})`).join(" + ");
    const b = st.bias < 0 ? ` - ${NC.fmt(-st.bias)}` : ` + ${NC.fmt(st.bias)}`;
    det.append(NC.el("h2", {}, `Output o[${st.o}][${st.y},${st.x}]: filter W${st.o} at rows ${st.origin[0]}..${st.origin[0] + span - 1}, columns ${st.origin[1]}..${st.origin[1] + span - 1} of the padded input`));
    st.window.forEach((win, c) => {
      const row = NC.el("div", {class: "prodrow"});
      row.append(NC.el("span", {class: "muted"}, `channel ${c}:`));
      row.append(grid(span, span, "win2", (r, col) => NC.el("div", {class: "c"}, NC.fmt(win[r][col]))));
      row.append(NC.el("span", {class: "op"}, "×"));
      row.append(grid(span, span, "filter", (r, col) => {
        const e = NC.el("div", {class: "c"}, NC.fmt(d.weight_spread[st.o][c][r][col]));
        if (!d.taps[r][col]) e.classList.add("off");
        return e;
      }));
      row.append(NC.el("span", {class: "op"}, "="));
      row.append(grid(span, span, "prod", (r, col) => NC.el("div", {class: "c"}, NC.fmt(st.products[c][r][col]))));
      row.append(NC.el("span", {class: "op"}, `sum = ${NC.fmt(st.channel_sums[c])}`));
      det.append(row);
    });
    det.append(NC.el("div", {class: "eq", id: "equation"},
      `o[${st.o}][${st.y},${st.x}] = ${sums}${b} = ${NC.fmt(st.value)}`));
    const pre = NC.el("pre", {}, st.text);
    const more = NC.el("details", {});
    more.append(NC.el("summary", {class: "muted"}, "as numcnn convdemo prints it"), pre);
    det.append(more);
  }

  function select(k) {
    if (!data) return;
    state.step = (k + data.steps.length) % data.steps.length;
    render(); save();
  }
  function tick() { select(state.step + 1); }
  function play() {
    stop();
    state.play = true;
    timer = setInterval(tick, 1000 / state.speed);
    $("toggle").setAttribute("aria-pressed", "true");
    document.body.dataset.playing = "1";
    save();
  }
  function stop() {
    if (timer) clearInterval(timer);
    timer = null; state.play = false;
    $("toggle").setAttribute("aria-pressed", "false");
    document.body.dataset.playing = "0";
    save();
  }

  function readSizes() {
    for (const f of FIELDS) {
      const v = Number($(f).value);
      state[f] = Number.isFinite(v) ? v : DEFAULTS[f];
    }
  }

  function init() {
    state = NC.getState(DEFAULTS);
    if (state.seed !== "deck" && !/^\d+$/.test(String(state.seed))) state.seed = "deck";
    if (state.seed !== "deck") state.seed = Number(state.seed);
    FIELDS.forEach(f => { $(f).value = state[f]; $(f).addEventListener("change", () => { readSizes(); edits = {}; state.step = 0; load(); }); });
    $("speed").value = state.speed; $("speedval").textContent = `${state.speed}/s`;
    $("speed").addEventListener("input", () => {
      state.speed = Number($("speed").value); $("speedval").textContent = `${state.speed}/s`;
      if (timer) play(); else save();
    });
    $("toggle").addEventListener("click", () => (timer ? stop() : play()));
    $("fwd").addEventListener("click", () => { stop(); select(state.step + 1); });
    $("back").addEventListener("click", () => { stop(); select(state.step - 1); });
    $("random").addEventListener("click", () => { edits = {}; state.seed = Math.floor(Math.random() * 1e9); load(); });
    $("deck").addEventListener("click", () => {
      edits = {}; Object.assign(state, {seed: "deck", size: 5, depth: 3, filters: 2, kernel: 3, stride: 2, padding: 1, dilation: 1, step: 0});
      FIELDS.forEach(f => $(f).value = state[f]); load();
    });
    window.addEventListener("resize", () => { if (data) render(); });
    window.addEventListener("pagehide", stop);
    load().then(() => { if (state.play) play(); else stop(); });
  }
  document.addEventListener("DOMContentLoaded", init);
})();
