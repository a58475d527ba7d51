/* segdiff mask editor: the page of `segdiff serve` (vanilla JS, no dependencies, works offline).

The mask is an integer label map: `state.mask.data`, a Uint8Array of height*width label ids
(row-major, 0 = background), is the single source of truth. The canvas only shows it (each mask
pixel a `scale` x `scale` square of its label's colour); labels are never read back from colours.
Every edit (a stroke, deleting, moving or scaling an organ) is one undo step.
*/
(function () {
  "use strict";

  const UNKNOWN_COLOUR = [255, 0, 255]; // an id outside the label table
  const CANVAS_TARGET = 512; // screen px the mask is scaled up to (whole mask px)
  const POLL_MS = 200;
  const UNDO_LIMIT = 200;

  const $ = (id) => document.getElementById(id);

  const state = {
    config: null,
    model: null, // the current model's entry of config.models
    mask: null, // {height, width, data: Uint8Array}
    source: "", // what the mask is (test slice, upload) for the info line
    undo: [], // earlier masks: {height, width, data}
    tool: "paint",
    scale: 1,
    colours: new Map(), // id -> [r, g, b]
    names: new Map(), // id -> name
    stroke: null, // {before: Uint8Array, last: [y, x]} while painting
    drag: null, // {before, start: [y, x], label} while moving with the move tool
    hover: null, // [y, x] under the pointer
    serverWarnings: [],
    error: "",
    job: null, // the id of the job whose generations are shown
    busy: false,
  };

  /* ---------- messages ---------- */

  function unseenWarning() {
    if (!state.mask || !state.model) return [];
    const seen = new Set(state.model.classes_seen);
    const present = labelsIn(state.mask.data);
    const unseen = [...present.keys()].filter((id) => id !== 0 && !seen.has(id));
    if (!unseen.length) return [];
    const names = unseen.map((id) => `${id} ${state.names.get(id) || "(not in the label map)"}`).join(", ");
    return [`the mask holds labels the model ${state.model.label} never saw in training: ${names}; ` +
            "what it generates there is unconstrained"];
  }

  function sizeWarning() {
    if (!state.mask || !state.model) return [];
    const n = state.model.image_size;
    if (state.mask.height === n && state.mask.width === n) return [];
    return [`The mask is ${state.mask.height}x${state.mask.width} but the model generates ${n}x${n} images.`];
  }

  function renderMessages() {
    const box = $("message");
    box.textContent = "";
    // the server's unseen-label warning is about the mask it was sent; the page's own check (always on) is
    // about the mask shown now, so it replaces the server's rather than repeating it
    const server = state.serverWarnings.filter((w) => !(state.model && /never saw/i.test(w)));
    const warnings = [...new Set([...unseenWarning(), ...sizeWarning(), ...server])];
    const lines = [];
    if (state.error) lines.push(["error", state.error]);
    for (const w of warnings) lines.push(["warning", w]);
    for (const [kind, text] of lines) {
      const div = document.createElement("div");
      div.className = kind;
      div.textContent = (kind === "error" ? "Error: " : "Warning: ") + text;
      box.appendChild(div);
    }
    box.className = state.error ? "error" : warnings.length ? "warning" : "";
  }

  function showError(text) {
    state.error = String(text);
    renderMessages();
  }

  function clearError() {
    state.error = "";
    renderMessages();
  }

  /* ---------- HTTP ---------- */

  async function errorText(response) {
    let detail = "";
    try {
      const body = await response.json();
      detail = typeof body.detail === "string" ? body.detail : JSON.stringify(body.detail);
    } catch (e) {
      detail = response.statusText;
    }
    return `${detail || "request failed"} (HTTP ${response.status})`;
  }

  async function request(url, options) {
    let response;
    try {
      response = await fetch(url, options);
    } catch (e) {
      throw new Error(`the server does not answer (${e.message}); is segdiff serve still running?`);
    }
    if (!response.ok) throw new Error(await errorText(response));
    return response;
  }

  const getJSON = async (url) => (await request(url)).json();
  const postJSON = (url, body) =>
    request(url, {method: "POST", headers: {"Content-Type": "application/json"}, body: JSON.stringify(body)});

  /* ---------- mask encoding ---------- */

  function toBase64(bytes) {
    let binary = "";
    for (let i = 0; i < bytes.length; i += 0x8000) {
      binary += String.fromCharCode.apply(null, bytes.subarray(i, i + 0x8000));
    }
    return btoa(binary);
  }

  function fromBase64(text) {
    const binary = atob(text);
    const bytes = new Uint8Array(binary.length);
    for (let i = 0; i < binary.length; i++) bytes[i] = binary.charCodeAt(i);
    return bytes;
  }

  function decodeMask(m) {
    const data = fromBase64(m.data);
    if (data.length !== m.height * m.width) {
      throw new Error(`mask data holds ${data.length} bytes, not ${m.height}x${m.width}`);
    }
    return {height: m.height, width: m.width, data};
  }

  function encodeMask(mask) {
    return {height: mask.height, width: mask.width, data: toBase64(mask.data)};
  }

  function labelsIn(data) {
    const counts = new Map();
    for (let i = 0; i < data.length; i++) counts.set(data[i], (counts.get(data[i]) || 0) + 1);
    return new Map([...counts.entries()].sort((a, b) => a[0] - b[0]));
  }

  /* ---------- drawing ---------- */

  function hexToRgb(hex) {
    const m = /^#?([0-9a-f]{2})([0-9a-f]{2})([0-9a-f]{2})$/i.exec(hex || "");
    return m ? [parseInt(m[1], 16), parseInt(m[2], 16), parseInt(m[3], 16)] : UNKNOWN_COLOUR;
  }

  function colourOf(id) {
    if (id === 0) return [0, 0, 0];
    return state.colours.get(id) || UNKNOWN_COLOUR;
  }

  const offscreen = document.createElement("canvas");

  function render() {
    const canvas = $("mask-canvas");
    const mask = state.mask;
    if (!mask) return;
    const {height: H, width: W, data} = mask;
    state.scale = Math.max(1, Math.floor(CANVAS_TARGET / Math.max(H, W)));
    const s = state.scale;
    if (canvas.width !== W * s || canvas.height !== H * s) {
      canvas.width = W * s;
      canvas.height = H * s;
      canvas.style.width = `${W * s}px`;
      canvas.style.height = `${H * s}px`;
    }
    offscreen.width = W;
    offscreen.height = H;
    const octx = offscreen.getContext("2d");
    const image = octx.createImageData(W, H);
    const lut = new Array(256);
    for (let i = 0; i < data.length; i++) {
      const id = data[i];
      const c = lut[id] || (lut[id] = colourOf(id));
      image.data[4 * i] = c[0];
      image.data[4 * i + 1] = c[1];
      image.data[4 * i + 2] = c[2];
      image.data[4 * i + 3] = 255;
    }
    octx.putImageData(image, 0, 0);
    const ctx = canvas.getContext("2d");
    ctx.imageSmoothingEnabled = false;
    ctx.drawImage(offscreen, 0, 0, W * s, H * s);
    if (state.hover && (state.tool === "paint" || state.tool === "erase")) {
      const r = (brushSize() - 1) / 2;
      const [y, x] = state.hover;
      ctx.strokeStyle = "rgba(255,255,255,0.8)";
      ctx.lineWidth = 1;
      ctx.strokeRect((x - r) * s + 0.5, (y - r) * s + 0.5, (2 * r + 1) * s - 1, (2 * r + 1) * s - 1);
    }
  }

  function renderLegend() {
    const list = $("legend");
    list.textContent = "";
    if (!state.mask) return;
    const seen = new Set(state.model ? state.model.classes_seen : []);
    for (const [id, count] of labelsIn(state.mask.data)) {
      if (id === 0) continue;
      const li = document.createElement("li");
      const sw = document.createElement("span");
      sw.className = "swatch";
      sw.style.background = `rgb(${colourOf(id).join(",")})`;
      li.appendChild(sw);
      li.appendChild(document.createTextNode(`${id} ${state.names.get(id) || "?"} (${count} px)`));
      if (!seen.has(id)) {
        li.classList.add("unseen");
        li.title = "not seen by the model in training";
      }
      li.dataset.label = String(id);
      li.addEventListener("click", () => selectLabel(id));
      list.appendChild(li);
    }
  }

  function maskChanged() {
    render();
    renderLegend();
    renderMessages();
  }

  /* ---------- edits (all on state.mask.data) ---------- */

  function brushSize() {
    const s = parseInt($("brush").value, 10);
    return Number.isFinite(s) ? Math.max(1, Math.min(15, s | 1)) : 3;
  }

  function currentLabel() {
    return parseInt($("label").value, 10) || 0;
  }

  function stamp(data, H, W, cy, cx, size, value) {
    const r = (size - 1) / 2;
    const y0 = Math.max(0, cy - r), y1 = Math.min(H - 1, cy + r);
    const x0 = Math.max(0, cx - r), x1 = Math.min(W - 1, cx + r);
    for (let y = y0; y <= y1; y++) data.fill(value, y * W + x0, x1 >= x0 ? y * W + x1 + 1 : y * W + x0);
  }

  function paintLine(from, to, value) {
    // Bresenham from `from` to `to` (both [y, x]), a brush square at every step: no holes in a fast stroke
    const {height: H, width: W, data} = state.mask;
    const size = brushSize();
    let [y, x] = from;
    const [y1, x1] = to;
    const dx = Math.abs(x1 - x), sx = x < x1 ? 1 : -1;
    const dy = -Math.abs(y1 - y), sy = y < y1 ? 1 : -1;
    let err = dx + dy;
    for (;;) {
      stamp(data, H, W, y, x, size, value);
      if (y === y1 && x === x1) break;
      const e2 = 2 * err;
      if (e2 >= dy) { err += dy; x += sx; }
      if (e2 <= dx) { err += dx; y += sy; }
    }
  }

  function pushUndo(before) {
    state.undo.push({height: state.mask.height, width: state.mask.width, data: before});
    if (state.undo.length > UNDO_LIMIT) state.undo.shift();
    $("undo").disabled = false;
  }

  function sameData(a, b) {
    if (a.length !== b.length) return false;
    for (let i = 0; i < a.length; i++) if (a[i] !== b[i]) return false;
    return true;
  }

  /** Apply `edit(data) -> new data | undefined` as one undo step (nothing recorded if it changes nothing). */
  function applyEdit(edit) {
    if (!state.mask) return;
    const before = state.mask.data.slice();
    const out = edit(state.mask.data);
    if (out) state.mask.data = out;
    if (!sameData(before, state.mask.data)) pushUndo(before);
    maskChanged();
  }

  function undo() {
    if (!state.undo.length || state.stroke || state.drag) return;
    state.mask = state.undo.pop();
    $("undo").disabled = state.undo.length === 0;
    maskChanged();
  }

  function deleteOrgan(label) {
    applyEdit((data) => {
      for (let i = 0; i < data.length; i++) if (data[i] === label) data[i] = 0;
    });
  }

  /** `src` with `label` moved by (dy, dx): vacated pixels 0, pixels outside dropped, overwrites where it lands. */
  function translated(src, H, W, label, dy, dx) {
    const out = src.slice();
    for (let i = 0; i < out.length; i++) if (out[i] === label) out[i] = 0;
    for (let y = 0; y < H; y++) {
      const ty = y + dy;
      if (ty < 0 || ty >= H) continue;
      for (let x = 0; x < W; x++) {
        const tx = x + dx;
        if (src[y * W + x] === label && tx >= 0 && tx < W) out[ty * W + tx] = label;
      }
    }
    return out;
  }

  /** `src` with `label` scaled by `f` about its centroid (nearest neighbour, inverse mapping of pixel centres). */
  function scaled(src, H, W, label, f) {
    let n = 0, sy = 0, sx = 0, ymin = H, ymax = -1, xmin = W, xmax = -1;
    for (let y = 0; y < H; y++) {
      for (let x = 0; x < W; x++) {
        if (src[y * W + x] !== label) continue;
        n++; sy += y + 0.5; sx += x + 0.5;
        ymin = Math.min(ymin, y); ymax = Math.max(ymax, y); xmin = Math.min(xmin, x); xmax = Math.max(xmax, x);
      }
    }
    if (!n) return null;
    const cy = sy / n, cx = sx / n;
    const out = src.slice();
    for (let i = 0; i < out.length; i++) if (out[i] === label) out[i] = 0;
    // the target box: the source box's corners mapped forward, clipped to the image
    const ty0 = Math.max(0, Math.floor(cy + (ymin - cy) * f) - 1), ty1 = Math.min(H - 1, Math.ceil(cy + (ymax + 1 - cy) * f) + 1);
    const tx0 = Math.max(0, Math.floor(cx + (xmin - cx) * f) - 1), tx1 = Math.min(W - 1, Math.ceil(cx + (xmax + 1 - cx) * f) + 1);
    for (let y = ty0; y <= ty1; y++) {
      const srcY = Math.floor(cy + (y + 0.5 - cy) / f);
      if (srcY < 0 || srcY >= H) continue;
      for (let x = tx0; x <= tx1; x++) {
        const srcX = Math.floor(cx + (x + 0.5 - cx) / f);
        if (srcX >= 0 && srcX < W && src[srcY * W + srcX] === label) out[y * W + x] = label;
      }
    }
    return out;
  }

  function intInput(id, fallback) {
    const v = parseInt($(id).value, 10);
    return Number.isFinite(v) ? v : fallback;
  }

  function organOrComplain(label) {
    if (!state.mask) return false;
    if (label === 0) {
      showError("pick an organ first (background cannot be moved, scaled or deleted)");
      return false;
    }
    if (!state.mask.data.includes(label)) {
      showError(`organ ${label} ${state.names.get(label) || ""} is not in the mask`);
      return false;
    }
    clearError();
    return true;
  }

  /* ---------- pointer ---------- */

  function maskPoint(event) {
    // mask pixel under the pointer: (floor(offsetY / scale), floor(offsetX / scale)); from client coordinates so
    // that a stroke leaving the canvas keeps being tracked (the canvas has no border or padding)
    const rect = $("mask-canvas").getBoundingClientRect();
    const s = state.scale * (rect.width / $("mask-canvas").width || 1);
    return [Math.floor((event.clientY - rect.top) / s), Math.floor((event.clientX - rect.left) / s)];
  }

  function inside([y, x]) {
    return state.mask && y >= 0 && x >= 0 && y < state.mask.height && x < state.mask.width;
  }

  function onMouseDown(event) {
    if (event.button !== 0 || !state.mask) return;
    event.preventDefault();
    const p = maskPoint(event);
    if (!inside(p)) return;
    if (event.altKey) { // eyedropper
      const id = state.mask.data[p[0] * state.mask.width + p[1]];
      if (id) selectLabel(id);
      return;
    }
    if (state.tool === "move") {
      const label = currentLabel();
      if (!organOrComplain(label)) return;
      state.drag = {before: state.mask.data.slice(), start: p, label};
      return;
    }
    state.stroke = {before: state.mask.data.slice(), last: p};
    paintLine(p, p, state.tool === "erase" ? 0 : currentLabel());
    render();
  }

  function onMouseMove(event) {
    if (!state.mask) return;
    const p = maskPoint(event);
    if (state.stroke) {
      paintLine(state.stroke.last, p, state.tool === "erase" ? 0 : currentLabel());
      state.stroke.last = p;
    } else if (state.drag) {
      const d = state.drag;
      state.mask.data = translated(d.before, state.mask.height, state.mask.width, d.label, p[0] - d.start[0], p[1] - d.start[1]);
    }
    const was = state.hover;
    state.hover = inside(p) ? p : null;
    if (state.stroke || state.drag || String(was) !== String(state.hover)) render();
    showHover();
  }

  function onMouseUp() {
    const done = state.stroke || state.drag;
    if (!done) return;
    state.stroke = state.drag = null;
    if (!sameData(done.before, state.mask.data)) pushUndo(done.before);
    maskChanged();
  }

  function showHover() {
    const info = $("hover-info");
    if (!state.hover || !state.mask) {
      info.innerHTML = "&nbsp;";
      return;
    }
    const [y, x] = state.hover;
    const id = state.mask.data[y * state.mask.width + x];
    info.textContent = `row ${y}, column ${x}: ${id} ${id ? state.names.get(id) || "?" : "background"}` +
      "  (Alt+click picks the organ)";
  }

  /* ---------- controls ---------- */

  function setTool(tool) {
    state.tool = tool;
    for (const b of document.querySelectorAll("button.tool")) {
      const on = b.dataset.tool === tool;
      b.classList.toggle("active", on);
      b.setAttribute("aria-pressed", on ? "true" : "false");
    }
    $("mask-canvas").dataset.tool = tool;
    render();
  }

  function selectLabel(id) {
    if ([...$("label").options].some((o) => parseInt(o.value, 10) === id)) {
      $("label").value = String(id);
      showSwatch();
    }
  }

  function showSwatch() {
    $("label-swatch").style.background = `rgb(${colourOf(currentLabel()).join(",")})`;
  }

  function setBusy(busy) {
    state.busy = busy;
    for (const id of ["generate", "load-test", "upload", "model"]) $(id).disabled = busy;
  }

  function setMask(mask, source) {
    state.mask = mask;
    state.source = source;
    state.undo = [];
    state.stroke = state.drag = null;
    $("undo").disabled = true;
    $("mask-info").textContent = `${source} \u2014 ${mask.height}\u00d7${mask.width}`;
    maskChanged();
  }

  async function loadTest(index) {
    const model = state.model;
    if (!model) throw new Error("no model");
    if (!(index >= 0 && index < model.test_slices)) {
      throw new Error(`test mask ${index} is out of range: the model has ${model.test_slices} test slices (0..${model.test_slices - 1})`);
    }
    const body = await getJSON(`api/models/${encodeURIComponent(model.id)}/test-masks/${index}`);
    state.serverWarnings = [];
    $("test-index").value = String(body.index);
    setMask(decodeMask(body.mask), `test mask ${body.index}: ${body.case} ${body.view} slice ${body.slice}`);
  }

  function selectModel(id) {
    state.model = state.config.models.find((m) => m.id === id) || null;
    if (!state.model) return;
    $("model").value = id;
    const n = state.model.test_slices;
    $("test-index").max = String(Math.max(0, n - 1));
    $("test-count").textContent = n ? `${n} test slices (0..${n - 1})` : "no test slices: upload a mask";
    $("load-test").disabled = !n;
  }

  async function guarded(action) {
    try {
      await action();
      clearError();
    } catch (e) {
      showError(e.message || e);
    }
  }

  async function onModelChange() {
    selectModel($("model").value);
    await guarded(() => loadTest(0));
  }

  async function onUpload() {
    const file = $("upload-file").files[0];
    if (!file) {
      showError("choose a file to upload first");
      return;
    }
    const limit = state.config.max_upload_bytes;
    if (limit && file.size > limit) {
      showError(`${file.name} is ${(file.size / 2 ** 20).toFixed(1)} MiB; uploads are limited to ${(limit / 2 ** 20).toFixed(0)} MiB`);
      return;
    }
    const form = new FormData();
    form.append("file", file, file.name);
    form.append("model", state.model.id);
    const slice = $("upload-slice").value.trim();
    if (slice !== "") form.append("slice", slice);
    form.append("view", $("upload-view").value);
    setBusy(true);
    await guarded(async () => {
      const body = await (await request("api/upload", {method: "POST", body: form})).json();
      setMask(decodeMask(body.mask), `uploaded ${file.name}`);
      state.serverWarnings = body.warnings || [];
    });
    setBusy(false);
    renderMessages();
  }

  function sleep(ms) {
    return new Promise((resolve) => setTimeout(resolve, ms));
  }

  async function generate() {
    if (!state.mask || !state.model || state.busy) return;
    const kMax = state.config.k_max;
    const k = intInput("k", NaN), seed = intInput("seed", NaN);
    if (!(k >= 1 && k <= kMax)) { showError(`k must be between 1 and ${kMax}`); return; }
    if (!(seed >= 0 && seed < 2 ** 31)) { showError("the seed must be an integer in 0..2147483647"); return; }
    setBusy(true);
    const progress = $("progress");
    progress.value = 0;
    progress.max = 1;
    $("progress-text").textContent = "queued";
    try {
      const started = await (await postJSON("api/generate", {model: state.model.id, mask: encodeMask(state.mask), k, seed})).json();
      clearError();
      for (;;) {
        const job = await getJSON(`api/jobs/${encodeURIComponent(started.job)}`);
        if (job.total) {
          progress.max = job.total;
          progress.value = Math.min(job.done, job.total);
          $("progress-text").textContent = `step ${job.done} / ${job.total}`;
        }
        if (job.state === "done") {
          showResults(started.job, job.result, k);
          break;
        }
        if (job.state === "error") throw new Error(`generation failed: ${job.error}`);
        await sleep(POLL_MS);
      }
    } catch (e) {
      $("progress-text").textContent = "failed";
      showError(e.message || e);
    } finally {
      setBusy(false);
    }
  }

  function showResults(job, result, k) {
    state.job = job;
    state.serverWarnings = result.warnings || [];
    const box = $("results");
    box.textContent = "";
    const base = `api/jobs/${encodeURIComponent(job)}`;
    result.images.forEach((png, j) => {
      const fig = document.createElement("figure");
      const img = document.createElement("img");
      img.className = "generation";
      img.alt = `generation ${j + 1} of ${result.images.length}, seed ${result.seed}`;
      img.src = `data:image/png;base64,${png}`;
      const cap = document.createElement("figcaption");
      const link = document.createElement("a");
      link.className = "download-generation";
      link.href = `${base}/generation_${j}.png`;
      link.download = `${state.model.id}_seed${result.seed}_generation${j}.png`;
      link.textContent = "PNG";
      link.title = result.seeds ? `sampling seed ${result.seeds[j]}` : "";
      cap.appendChild(document.createTextNode(`#${j + 1} `));
      cap.appendChild(link);
      fig.appendChild(img);
      fig.appendChild(cap);
      box.appendChild(fig);
    });
    const all = $("download-generations-npy");
    all.href = `${base}/generations.npy`;
    all.download = `${state.model.id}_seed${result.seed}_generations.npy`;
    all.classList.remove("disabled");
    all.removeAttribute("aria-disabled");
    $("seed-shown").textContent = String(result.seed);
    $("result-info").textContent = `\u2014 ${result.images.length} of ${state.model.label}` +
      (result.seconds !== undefined ? `, ${Number(result.seconds).toFixed(1)} s` : "");
    $("progress-text").textContent = "done";
    const progress = $("progress");
    progress.value = progress.max;
    renderMessages();
  }

  async function downloadMask(kind) {
    if (!state.mask) return;
    await guarded(async () => {
      const blob = await (await postJSON(`api/export/mask.${kind}`, {mask: encodeMask(state.mask)})).blob();
      const url = URL.createObjectURL(blob);
      const a = document.createElement("a");
      a.href = url;
      a.download = `${state.model ? state.model.id + "_" : ""}mask.${kind}`;
      document.body.appendChild(a);
      a.click();
      a.remove();
      setTimeout(() => URL.revokeObjectURL(url), 10000);
    });
  }

  function onKey(event) {
    const t = event.target || {};
    const typing = /^(INPUT|SELECT|TEXTAREA)$/.test(t.tagName || "") && t.type !== "range" && t.type !== "button";
    if ((event.ctrlKey || event.metaKey) && !event.shiftKey && event.key.toLowerCase() === "z") {
      if (typing) return; // the field's own undo
      event.preventDefault();
      undo();
      return;
    }
    if (typing || event.ctrlKey || event.metaKey || event.altKey) return;
    const tools = {p: "paint", e: "erase", m: "move"};
    if (tools[event.key]) setTool(tools[event.key]);
    else if (event.key === "[" || event.key === "]") {
      const b = $("brush");
      b.value = String(Math.max(1, Math.min(15, brushSize() + (event.key === "]" ? 2 : -2))));
      b.dispatchEvent(new Event("input"));
    }
  }

  /* ---------- start ---------- */

  function buildControls(config) {
    for (const l of config.labels) {
      state.colours.set(l.id, hexToRgb(l.color));
      state.names.set(l.id, l.name);
      const o = document.createElement("option");
      o.value = String(l.id);
      o.textContent = `${l.id} ${l.name}`;
      o.style.borderLeft = `1em solid ${l.color}`;
      $("label").appendChild(o);
    }
    for (const m of config.models) {
      const o = document.createElement("option");
      o.value = m.id;
      o.textContent = m.label;
      $("model").appendChild(o);
    }
    $("k").max = String(config.k_max);
    $("k").value = String(config.k_default);
    $("sampler").textContent = config.sampler ? `sampler: ${config.sampler}` : "";
    showSwatch();
  }

  function wire() {
    const canvas = $("mask-canvas");
    canvas.addEventListener("mousedown", onMouseDown);
    canvas.addEventListener("contextmenu", (e) => e.preventDefault());
    canvas.addEventListener("mouseleave", () => { state.hover = null; render(); showHover(); });
    window.addEventListener("mousemove", onMouseMove);
    window.addEventListener("mouseup", onMouseUp);
    window.addEventListener("blur", onMouseUp);
    document.addEventListener("keydown", onKey);
    for (const b of document.querySelectorAll("button.tool")) b.addEventListener("click", () => setTool(b.dataset.tool));
    $("brush").addEventListener("input", () => { $("brush-value").textContent = String(brushSize()); render(); });
    $("label").addEventListener("change", showSwatch);
    $("model").addEventListener("change", onModelChange);
    $("load-test").addEventListener("click", () => guarded(() => loadTest(intInput("test-index", -1))));
    $("test-index").addEventListener("keydown", (e) => {
      if (e.key === "Enter") guarded(() => loadTest(intInput("test-index", -1)));
    });
    $("upload").addEventListener("click", onUpload);
    $("delete-organ").addEventListener("click", () => {
      const label = currentLabel();
      if (organOrComplain(label)) deleteOrgan(label);
    });
    $("move-organ").addEventListener("click", () => {
      const label = currentLabel();
      if (!organOrComplain(label)) return;
      const dy = intInput("move-dy", 0), dx = intInput("move-dx", 0);
      applyEdit((data) => translated(data, state.mask.height, state.mask.width, label, dy, dx));
    });
    $("scale-organ").addEventListener("click", () => {
      const label = currentLabel();
      const f = parseFloat($("scale-factor").value);
      if (!(f > 0 && f <= 10)) { showError("the scale factor must be in (0, 10]"); return; }
      if (!organOrComplain(label)) return;
      applyEdit((data) => scaled(data, state.mask.height, state.mask.width, label, f) || undefined);
    });
    $("undo").addEventListener("click", undo);
    $("generate").addEventListener("click", generate);
    $("random-seed").addEventListener("click", () => { $("seed").value = String(Math.floor(Math.random() * 2 ** 31)); });
    $("download-mask-png").addEventListener("click", () => downloadMask("png"));
    $("download-mask-npy").addEventListener("click", () => downloadMask("npy"));
    $("download-generations-npy").addEventListener("click", (e) => { if (!state.job) e.preventDefault(); });
  }

  const api = {
    ready: false,
    failed: "",
    getMask: () => (state.mask ? encodeMask(state.mask) : null),
    undoDepth: () => state.undo.length,
  };
  window.segdiffEditor = api;

  async function start() {
    wire();
    setTool("paint");
    $("undo").disabled = true;
    try {
      state.config = await getJSON("api/config");
      buildControls(state.config);
      if (!state.config.models.length) throw new Error("the server has no trained model to serve");
      selectModel(state.config.models[0].id);
      await loadTest(0);
      api.ready = true;
    } catch (e) {
      api.failed = String(e.message || e);
      showError(api.failed);
    }
  }

  if (document.readyState === "loading") document.addEventListener("DOMContentLoaded", start);
  else start();
})();
