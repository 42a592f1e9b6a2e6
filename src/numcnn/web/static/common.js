// numcnn playground: helpers shared by every page (no library, no build step).
"use strict";

const NC = {};

// The page's header: one link per page, the current one marked.
NC.PAGES = [["/", "1 Convolution"], ["/kernels", "2 Kernels"], ["/model", "3 Inside a model"],
            ["/train", "4 Train"], ["/summary", "5 Summary"]];
NC.header = function () {
  const h = document.createElement("header");
  const links = NC.PAGES.map(([href, text]) =>
    `<a href="${href}"${location.pathname === href ? ' class="here" aria-current="page"' : ""}>${text}</a>`).join("");
  h.innerHTML = `<a class="brand" href="/">numcnn playground</a><nav>${links}</nav>`;
  document.body.prepend(h);
};

// JSON API calls: the server answers errors as {"error": "..."}; they become Error messages.
NC.api = async function (path, opts) {
  const r = await fetch(path, opts || {});
  let body = null;
  try { body = await r.json(); } catch (e) { body = null; }
  if (!r.ok) throw new Error((body && body.error) || `${r.status} ${r.statusText}`);
  return body;
};
NC.post = (path, obj) => NC.api(path, {method: "POST", headers: {"Content-Type": "application/json"},
                                        body: JSON.stringify(obj)});

// State in the URL (TensorFlow Playground style): a view can be shared by its address.
NC.getState = function (defaults) {
  const q = new URLSearchParams(location.search), out = {};
  for (const k in defaults) {
    const v = q.get(k);
    if (v === null) out[k] = defaults[k];
    else if (typeof defaults[k] === "number") out[k] = Number.isFinite(Number(v)) ? Number(v) : defaults[k];
    else if (typeof defaults[k] === "boolean") out[k] = v === "1" || v === "true";
    else out[k] = v;
  }
  return out;
};
NC.setState = function (state, defaults) {
  const q = new URLSearchParams();
  for (const k in state) {
    if (defaults && state[k] === defaults[k]) continue;
    const v = state[k];
    q.set(k, typeof v === "boolean" ? (v ? "1" : "0") : String(v));
  }
  const s = q.toString();
  history.replaceState(null, "", location.pathname + (s ? "?" + s : ""));
};

NC.msg = function (el, text, kind) {
  el.className = "msg " + (kind || "error");
  el.textContent = text || "";
};

// Arrays from the API: {"shape": [...], "b64": float32 little-endian}.
NC.unpack = function (p) {
  const bin = atob(p.b64), bytes = new Uint8Array(bin.length);
  for (let i = 0; i < bin.length; i++) bytes[i] = bin.charCodeAt(i);
  return new Float32Array(bytes.buffer);
};

// Numbers as the terminal demo prints them: whole numbers plain, others with few digits.
NC.fmt = function (v) {
  if (Math.abs(v - Math.round(v)) < 1e-9) return String(Math.round(v));
  const a = Math.abs(v);
  let s = a >= 100 ? v.toFixed(0) : a >= 10 ? v.toFixed(1) : a >= 0.1 ? v.toFixed(2) : v.toPrecision(2);
  if (s.includes(".") && !s.includes("e")) s = s.replace(/0+$/, "").replace(/\.$/, "");
  return s === "-0" ? "0" : s;
};

// Colour maps. diverging: blue (negative) - white (0) - orange (positive), v in [-1, 1].
NC.diverging = function (v) {
  v = Math.max(-1, Math.min(1, v));
  if (v >= 0) return [255 - 25 * v, 255 - 140 * v, 255 - 245 * v];
  v = -v;
  return [255 - 230 * v, 255 - 150 * v, 255 - 60 * v];
};
NC.grey = (v) => { const g = 255 * Math.max(0, Math.min(1, v)); return [g, g, g]; };
// activations: dark to bright (viridis-like, 5 stops)
NC.STOPS = [[68, 1, 84], [59, 82, 139], [33, 145, 140], [94, 201, 98], [253, 231, 37]];
NC.viridis = function (v) {
  v = Math.max(0, Math.min(1, v)) * 4;
  const i = Math.min(3, Math.floor(v)), t = v - i, a = NC.STOPS[i], b = NC.STOPS[i + 1];
  return [a[0] + (b[0] - a[0]) * t, a[1] + (b[1] - a[1]) * t, a[2] + (b[2] - a[2]) * t];
};

// Draw an h x w array (data from offset) on a canvas, each value through colour(v01).
NC.drawMap = function (canvas, data, h, w, lo, hi, colour, offset) {
  offset = offset || 0;
  canvas.width = w; canvas.height = h;
  const ctx = canvas.getContext("2d"), img = ctx.createImageData(w, h), span = (hi - lo) || 1;
  for (let i = 0; i < h * w; i++) {
    const c = colour((data[offset + i] - lo) / span);
    img.data[4 * i] = c[0]; img.data[4 * i + 1] = c[1]; img.data[4 * i + 2] = c[2]; img.data[4 * i + 3] = 255;
  }
  ctx.putImageData(img, 0, 0);
};
NC.canvas = function (cls, title) {
  const c = document.createElement("canvas");
  c.className = "map " + (cls || "");
  if (title) c.title = title;
  return c;
};

NC.el = function (tag, attrs, text) {
  const e = document.createElement(tag);
  for (const k in attrs || {}) e.setAttribute(k, attrs[k]);
  if (text !== undefined) e.textContent = text;
  return e;
};

// A line chart on a canvas: series = [{name, values, colour, dash}], x = 1..n (epochs).
NC.lineChart = function (canvas, title, series, yLabel, fixedMax) {
  const dpr = window.devicePixelRatio || 1, W = canvas.clientWidth || 500, H = canvas.clientHeight || 240;
  canvas.width = W * dpr; canvas.height = H * dpr;
  const ctx = canvas.getContext("2d");
  ctx.setTransform(dpr, 0, 0, dpr, 0, 0);
  ctx.clearRect(0, 0, W, H);
  const L = 48, R = 12, T = 26, B = 30;
  const all = series.flatMap(s => s.values.filter(v => v !== null && Number.isFinite(v)));
  if (!all.length) {
    ctx.fillStyle = "#757575"; ctx.font = "13px system-ui, sans-serif";
    ctx.fillText(`${title}: after the first epoch`, 16, H / 2);
    return;
  }
  const n = Math.max(2, ...series.map(s => s.values.length));
  let ymax = fixedMax !== undefined ? fixedMax : Math.max(1e-6, ...all) * 1.05, ymin = 0;
  ctx.fillStyle = "#212121"; ctx.font = "13px system-ui, sans-serif";
  ctx.fillText(title, L, 16);
  ctx.strokeStyle = "#e0e0e0"; ctx.fillStyle = "#616161"; ctx.font = "11px system-ui, sans-serif";
  for (let i = 0; i <= 4; i++) {
    const v = ymin + (ymax - ymin) * i / 4, y = T + (H - T - B) * (1 - i / 4);
    ctx.beginPath(); ctx.moveTo(L, y); ctx.lineTo(W - R, y); ctx.stroke();
    ctx.fillText(v >= 10 ? v.toFixed(0) : v.toFixed(2), 6, y + 4);
  }
  const xOf = i => L + (W - L - R) * (n === 1 ? 0 : i / (n - 1));
  for (let i = 0; i < n; i++) if (n <= 12 || i % Math.ceil(n / 10) === 0) ctx.fillText(String(i + 1), xOf(i) - 3, H - B + 14);
  ctx.fillText("epoch", W - R - 32, H - 4);
  let lx = L + 140;
  for (const s of series) {
    ctx.strokeStyle = s.colour; ctx.lineWidth = 2; ctx.setLineDash(s.dash ? [5, 4] : []);
    ctx.beginPath();
    let started = false;
    s.values.forEach((v, i) => {
      if (v === null || !Number.isFinite(v)) return;
      const x = xOf(i), y = T + (H - T - B) * (1 - (v - ymin) / (ymax - ymin));
      if (!started) { ctx.moveTo(x, y); started = true; } else ctx.lineTo(x, y);
    });
    ctx.stroke();
    s.values.forEach((v, i) => {
      if (v === null || !Number.isFinite(v)) return;
      ctx.beginPath(); ctx.arc(xOf(i), T + (H - T - B) * (1 - (v - ymin) / (ymax - ymin)), 2.5, 0, 7);
      ctx.fillStyle = s.colour; ctx.fill();
    });
    ctx.setLineDash([]);
    ctx.fillStyle = s.colour; ctx.fillRect(lx, 8, 14, 3); ctx.fillStyle = "#424242";
    ctx.fillText(s.name, lx + 18, 13); lx += 30 + ctx.measureText(s.name).width;
  }
  ctx.lineWidth = 1;
};

document.addEventListener("DOMContentLoaded", NC.header);

// Filters (O, C, kh, kw) as one picture: a row per filter and a tile per input channel, or,
// for one input channel, the filters side by side in rows of `cols`; 1px gaps, white = 0.
NC.tileFilters = function (canvas, w, shape, cols) {
  const [O, C, kh, kw] = shape, n = O * C;
  cols = cols || (C > 1 ? C : Math.min(O, 8));
  const rows = Math.ceil(n / cols), W = cols * (kw + 1) - 1, H = rows * (kh + 1) - 1;
  canvas.width = W; canvas.height = H;
  const ctx = canvas.getContext("2d"), img = ctx.createImageData(W, H);
  let m = 1e-12;
  for (let i = 0; i < w.length; i++) m = Math.max(m, Math.abs(w[i]));
  for (let i = 0; i < img.data.length; i += 4) { img.data[i] = img.data[i + 1] = img.data[i + 2] = 238; img.data[i + 3] = 255; }
  for (let t = 0; t < n; t++) {
    const r0 = Math.floor(t / cols) * (kh + 1), c0 = (t % cols) * (kw + 1);
    for (let i = 0; i < kh; i++) for (let j = 0; j < kw; j++) {
      const col = NC.diverging(w[(t * kh + i) * kw + j] / m), p = 4 * ((r0 + i) * W + c0 + j);
      img.data[p] = col[0]; img.data[p + 1] = col[1]; img.data[p + 2] = col[2];
    }
  }
  ctx.putImageData(img, 0, 0);
};
