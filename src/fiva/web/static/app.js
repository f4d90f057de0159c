// fiva serve: upload, choose faces, anonymize, review, download. Talks only to its own server.
"use strict";

const $ = (id) => document.getElementById(id);
const SVG = "http://www.w3.org/2000/svg";
let info = null;      // /api/info: upload limit, accepted types
let upload = null;    // the current upload with its faces
let chosen = new Set(); // indices of the clicked faces
let jobSeq = 0;       // a newer upload or run makes older polls stop

function mb(n) { return (n / 1024 / 1024).toFixed(1) + " MB"; }

async function api(url, options) {
  let r;
  try {
    r = await fetch(url, options);
  } catch (e) {
    throw new Error("the fiva server does not answer (was it stopped?)");
  }
  let body;
  try { body = await r.json(); } catch (e) { body = { error: `the server answered ${r.status} ${r.statusText}` }; }
  if (!r.ok) throw new Error(body.error || `the server answered ${r.status}`);
  return body;
}

function showError(msg) { $("error").textContent = msg; $("error").hidden = false; }
function clearError() { $("error").hidden = true; $("error").textContent = ""; }
function status(msg) { $("status").textContent = msg; }

function mode() { return document.querySelector("input[name=mode]:checked").value; }
function stays(i) { return (mode() === "keep") === chosen.has(i); }

function resetView() {
  jobSeq++;
  upload = null; chosen = new Set();
  $("controls").hidden = true; $("panes").hidden = true; $("done").hidden = true;
  $("progress").hidden = true; $("progress-text").textContent = "";
  clearAfter();
}

function clearAfter() {
  const after = $("after");
  after.replaceChildren(document.createTextNode("the result appears here"));
  after.className = "stage empty";
  $("done").hidden = true;
}

async function handleFile(file) {
  resetView(); clearError();
  if (!file) return;
  if (info && file.size > info.max_upload_bytes) {
    showError(`${file.name}: too large (${mb(file.size)}; the limit is ${mb(info.max_upload_bytes)}, fiva serve --max-upload-mb raises it)`);
    return;
  }
  status(`Uploading ${file.name} and looking for faces…`);
  try {
    upload = await api("/api/uploads", {
      method: "POST", body: file,
      headers: { "X-Filename": encodeURIComponent(file.name), "Content-Type": "application/octet-stream" },
    });
  } catch (e) {
    status(""); showError(e.message); return;
  }
  showUpload();
}

function showUpload() {
  const n = upload.faces.length;
  const where = upload.kind === "video" ? ` in the first frame of ${upload.name} (${upload.frames} frames)` : ` in ${upload.name}`;
  status(n ? `${n} face${n > 1 ? "s" : ""} found${where}. Click a face to choose it.`
           : `No face found${where}: nothing would change.`);
  $("before-note").textContent = upload.kind === "video"
    ? "(first frame; the people you click are recognised in every frame)" : "";
  const img = $("before");
  img.src = upload.preview;
  const svg = $("overlay");
  svg.setAttribute("viewBox", `0 0 ${upload.width} ${upload.height}`);
  svg.replaceChildren();
  const size = Math.max(16, upload.width / 35);
  for (const f of upload.faces) {
    const [x1, y1, x2, y2] = f.box;
    const g = document.createElementNS(SVG, "g");
    g.dataset.face = f.index;
    const rect = document.createElementNS(SVG, "rect");
    rect.setAttribute("x", x1); rect.setAttribute("y", y1);
    rect.setAttribute("width", x2 - x1); rect.setAttribute("height", y2 - y1);
    rect.setAttribute("stroke-width", Math.max(2, upload.width / 300));
    const text = document.createElementNS(SVG, "text");
    text.setAttribute("x", x1 + 4); text.setAttribute("y", y1 - 6 < size ? y2 + size : y1 - 6);
    text.setAttribute("font-size", size); text.setAttribute("stroke-width", size / 6);
    text.textContent = f.number;
    const title = document.createElementNS(SVG, "title");
    g.append(title, rect, text);
    g.addEventListener("click", () => toggle(f.index));
    svg.append(g);
  }
  const list = $("faces");
  list.replaceChildren();
  for (const f of [...upload.faces].sort((a, b) => a.number - b.number)) {
    const b = document.createElement("button");
    b.type = "button"; b.dataset.face = f.index;
    b.addEventListener("click", () => toggle(f.index));
    list.append(b);
  }
  paintFaces();
  $("controls").hidden = false; $("panes").hidden = false;
  $("run").disabled = false;
}

function toggle(i) {
  if (chosen.has(i)) chosen.delete(i); else chosen.add(i);
  paintFaces();
}

function paintFaces() {
  if (!upload) return;
  for (const f of upload.faces) {
    const word = stays(f.index) ? "stays as it is" : "will be anonymized";
    const g = document.querySelector(`#overlay g[data-face="${f.index}"]`);
    g.classList.toggle("stays", stays(f.index));
    g.querySelector("title").textContent = `face ${f.number}: ${word}`;
    const b = document.querySelector(`#faces button[data-face="${f.index}"]`);
    b.classList.toggle("stays", stays(f.index));
    b.setAttribute("aria-pressed", chosen.has(f.index));
    b.textContent = `Face ${f.number}: ${word}`;
  }
}

async function run() {
  if (!upload) return;
  clearError(); clearAfter();
  const seq = ++jobSeq;
  $("run").disabled = true;
  const bar = $("progress");
  bar.value = 0; bar.hidden = false;
  $("progress-text").textContent = "starting…";
  let job;
  try {
    job = await api("/api/jobs", {
      method: "POST", headers: { "Content-Type": "application/json" },
      body: JSON.stringify({ upload: upload.id, method: $("method").value, mode: mode(), faces: [...chosen] }),
    });
    while (job.state === "queued" || job.state === "running") {
      showProgress(job);
      await new Promise((r) => setTimeout(r, 250));
      if (seq !== jobSeq) return; // another file or run took over
      job = await api(`/api/jobs/${job.id}`);
    }
  } catch (e) {
    if (seq === jobSeq) { bar.hidden = true; $("progress-text").textContent = ""; showError(e.message); $("run").disabled = false; }
    return;
  }
  if (seq !== jobSeq) return;
  $("run").disabled = false;
  showProgress(job);
  if (job.state === "failed") { bar.hidden = true; $("progress-text").textContent = ""; showError(job.error); return; }
  showResult(job);
}

function showProgress(job) {
  const bar = $("progress");
  bar.value = job.total ? job.done / job.total : 0;
  $("progress-text").textContent = job.state === "done" ? "done"
    : job.kind === "video" ? `frame ${job.done} of ${job.total}` : "working…";
}

function showResult(job) {
  const after = $("after");
  after.className = "stage";
  let el;
  if (job.kind === "video") {
    el = document.createElement("video");
    el.id = "after-video";
    Object.assign(el, { controls: true, autoplay: true, muted: true, loop: true, playsInline: true });
    el.addEventListener("error", () => showError(`This browser cannot play ${job.filename}; download it below.`));
  } else {
    el = document.createElement("img");
    el.id = "after-image"; el.alt = "the anonymized picture";
  }
  el.src = job.result;
  after.replaceChildren(el);
  $("summary").textContent = job.summary;
  const a = $("download");
  a.href = job.download; a.setAttribute("download", job.filename);
  a.textContent = `Download ${job.filename}`;
  $("done").hidden = false;
}

async function init() {
  $("file").addEventListener("change", (e) => { handleFile(e.target.files[0]); e.target.value = ""; });
  const drop = $("drop");
  drop.addEventListener("dragover", (e) => { e.preventDefault(); drop.classList.add("over"); });
  drop.addEventListener("dragleave", () => drop.classList.remove("over"));
  drop.addEventListener("drop", (e) => { e.preventDefault(); drop.classList.remove("over"); handleFile(e.dataTransfer.files[0]); });
  for (const r of document.querySelectorAll("input[name=mode]")) r.addEventListener("change", paintFaces);
  $("run").addEventListener("click", run);
  try {
    info = await api("/api/info");
    $("limit").textContent = `photos (${info.image_exts.join(" ")}) or videos (${info.video_exts.join(" ")}), up to ${mb(info.max_upload_bytes)}`;
    $("file").accept = ["image/*", "video/*", ...info.image_exts, ...info.video_exts].join(",");
  } catch (e) { showError(e.message); }
}

init();
