// genai web page: plain JavaScript, no build step, nothing loaded from elsewhere.
"use strict";

const $ = (id) => document.getElementById(id);
const KEY_STORE = "genai.apiKey";
const EXT = { "image/png": "png", "image/jpeg": "jpg", "image/webp": "webp", "image/tiff": "tif" };
const VIDEO_EXT = /\.(mp4|m4v|mov|mkv|webm|avi|ts|mts|m2ts|mpg|mpeg)$/i;
const JOB_DONE = ["succeeded", "failed", "cancelled"];
const TABS = ["upscale", "design", "synth"];
const page = { auth: "keys", defaults: {}, modelChosen: false, urls: [], watch: null, tab: "upscale" };
// what a tab does when it is shown, or when the key changes while it is shown (design.js, synth.js)
const tabHooks = {};

// --- API -------------------------------------------------------------------------------------

function authHeaders() {
  const key = $("api-key").value.trim();
  return page.auth === "open" || !key ? {} : { Authorization: `Bearer ${key}` };
}

async function api(path, options = {}) {
  let res;
  try {
    res = await fetch(path, { ...options, headers: { ...authHeaders(), ...(options.headers || {}) } });
  } catch (err) {
    if (err.name === "AbortError") throw err;
    throw new Error("The service cannot be reached (network error): check the connection and try again.");
  }
  if (!res.ok) {
    let message = `${res.status} ${res.statusText}`;
    try {
      const body = await res.json();
      if (body && body.error && body.error.message) message = body.error.message;
    } catch (_) { /* not JSON: keep the status line */ }
    const err = new Error(message);
    err.status = res.status;
    throw err;
  }
  return res;
}

// --- status, errors, object URLs -------------------------------------------------------------

function setStatus(text) { $("status").textContent = text; }

function showError(err) {
  const box = $("error");
  if (!err) { box.hidden = true; box.textContent = ""; return; }
  if (err.name === "AbortError") return;
  box.textContent = err.status ? `${err.message} (HTTP ${err.status})` : err.message || String(err);
  box.hidden = false;
}

function objectURL(blob) {
  const url = URL.createObjectURL(blob);
  page.urls.push(url);
  return url;
}

function resetResult() {
  if (page.watch) page.watch.abort();
  page.watch = null;
  page.urls.splice(0).forEach((u) => URL.revokeObjectURL(u));
  for (const id of ["result", "video-job", "compare", "videos", "output"]) $(id).hidden = true;
  for (const id of ["result-image", "original-image", "result-video", "original-video"]) $(id).removeAttribute("src");
  $("result-size").textContent = "";
  showError(null);
}

// --- the form --------------------------------------------------------------------------------

function fileKind(file) {
  if (!file) return "image";
  if (file.type.startsWith("video/") || (!file.type && VIDEO_EXT.test(file.name))) return "video";
  return "image"; // anything else goes to the image route, which judges it from its content
}

function applyKind() {
  const kind = fileKind($("file").files[0]);
  $("form").dataset.kind = kind;
  document.querySelectorAll(".image-only").forEach((el) => { el.hidden = kind !== "image"; });
  document.querySelectorAll(".video-only").forEach((el) => { el.hidden = kind !== "video"; });
  const preferred = page.defaults[kind];
  if (!page.modelChosen && preferred && $("model").querySelector(`option[value="${preferred}"]`)) {
    $("model").value = preferred;
  }
}

async function loadModels() {
  if (page.auth !== "open" && !$("api-key").value.trim()) return;
  try {
    const data = await (await api("/v1/models")).json();
    const select = $("model");
    const keep = page.modelChosen ? select.value : "";
    select.replaceChildren(...data.models.map((m) => {
      const option = new Option(`${m.name} (×${m.scale}, ${m.content})${m.ready ? "" : " – not prepared"}`, m.id);
      option.disabled = !m.ready;
      return option;
    }));
    page.defaults = { image: data.image_default, video: data.video_default };
    if (keep) select.value = keep;
    applyKind();
    showError(null);
  } catch (err) {
    showError(err.status === 401 ? new Error(`API key: ${err.message}`) : err);
  }
}

function sizeFields(form) {
  const scale = $("scale").value;
  if (scale === "size") {
    if ($("width").value) form.append("width", $("width").value);
    if ($("height").value) form.append("height", $("height").value);
  } else if (scale) {
    form.append("scale", scale);
  }
  if ($("model").value) form.append("model", $("model").value);
}

function stem(name) { return (name || "output").replace(/\.[^.]*$/, "") || "output"; }

// --- images: one request -----------------------------------------------------------------------

async function upscaleImage(file) {
  const form = new FormData();
  form.append("file", file);
  sizeFields(form);
  if ($("format").value) form.append("format", $("format").value);
  setStatus(`Upscaling ${file.name}…`);
  const res = await api("/v1/images:upscale", { method: "POST", body: form });
  const blob = await res.blob();
  const size = res.headers.get("X-Genai-Size") || "";
  const seconds = parseFloat(res.headers.get("X-Genai-Inference-Seconds") || "0");
  const url = objectURL(blob);
  $("original-image").src = objectURL(file);
  $("result-image").src = url;
  $("result-size").textContent = size;
  const link = $("download");
  link.href = url;
  link.download = `${stem(file.name)}_${size || "upscaled"}.${EXT[blob.type] || "png"}`;
  $("compare").hidden = $("output").hidden = $("result").hidden = false;
  setStatus(`Done: ${size} with ${res.headers.get("X-Genai-Model")} in ${seconds.toFixed(2)} s.`);
}

// --- videos: a job, watched over Server-Sent Events --------------------------------------------

async function submitVideo(file) {
  const form = new FormData();
  form.append("file", file);
  form.append("kind", "remaster");
  sizeFields(form);
  form.append("codec", $("codec").value);
  form.append("container", $("container").value);
  if ($("preview").value) form.append("preview", $("preview").value);
  setStatus(`Uploading ${file.name}…`);
  const ctrl = new AbortController();
  page.watch = ctrl;
  const how = { status: setStatus, signal: ctrl.signal };
  const job = await startJob("video", form, how);
  $("original-video").src = objectURL(file);
  $("videos").hidden = $("result").hidden = false;
  // followed without holding the form: another file can be upscaled meanwhile
  followJobIn("video", job, how)
    .then((last) => (last && last.state === "succeeded" ? fetchResult(last, ctrl.signal) : null))
    .catch((err) => { if (!ctrl.signal.aborted) { setStatus(""); showError(err); } });
}

function formatEta(s) {
  if (s == null) return "ETA –";
  s = Math.round(s);
  return s >= 60 ? `ETA ${Math.floor(s / 60)} min ${s % 60} s` : `ETA ${s} s`;
}

// EventSource cannot send an Authorization header: read the stream with fetch and parse it here.
// Follows job `id` until it ends (reconnecting when the stream drops), calling onJob with every
// state it reports; returns the last one (or what it had when `signal` aborted it).
async function followJob(id, onJob, signal) {
  let last = null;
  let failures = 0;
  while (!signal.aborted) {
    try {
      const res = await api(`/v1/jobs/${id}/events`, { signal, headers: { Accept: "text/event-stream" } });
      const reader = res.body.pipeThrough(new TextDecoderStream()).getReader();
      let buffer = "";
      for (;;) {
        const { value, done } = await reader.read();
        if (done) break;
        buffer = (buffer + value).replace(/\r\n?/g, "\n");
        let end;
        while ((end = buffer.indexOf("\n\n")) >= 0) {
          const block = buffer.slice(0, end);
          buffer = buffer.slice(end + 2);
          const data = [];
          for (const line of block.split("\n")) {
            if (line.startsWith("data:")) data.push(line.slice(5).replace(/^ /, ""));
          }
          if (data.length) { last = JSON.parse(data.join("\n")); onJob(last); failures = 0; }
        }
      }
    } catch (err) {
      if (signal.aborted) break;
      if (err.status || ++failures > 5) throw err;
    }
    if (last && JOB_DONE.includes(last.state)) break;
    await new Promise((r) => setTimeout(r, 1000)); // the stream dropped: reconnect
  }
  return last;
}

async function fetchResult(job, signal) {
  setStatus(`Job ${job.id} succeeded; downloading the result…`);
  try {
    const res = await api(job.result_url, { signal });
    const blob = await res.blob();
    const named = /filename="?([^";]+)"?/.exec(res.headers.get("Content-Disposition") || "");
    const url = objectURL(blob);
    const video = $("result-video");
    video.src = url;
    video.addEventListener("loadedmetadata", () => {
      $("result-size").textContent = `${video.videoWidth}x${video.videoHeight}`;
    }, { once: true });
    $("download").href = url;
    $("download").download = named ? named[1] : `${job.input_name}_remastered.mp4`;
    $("output").hidden = false;
    setStatus(`Job ${job.id} succeeded.`);
  } catch (err) { showError(err); }
}

// the two videos move together, so one frame can be compared
function syncVideos() {
  const [a, b] = [$("result-video"), $("original-video")];
  a.addEventListener("seeked", () => {
    if (Math.abs(b.currentTime - a.currentTime) > 0.05) b.currentTime = a.currentTime;
  });
  a.addEventListener("play", () => { b.currentTime = a.currentTime; b.play().catch(() => {}); });
  a.addEventListener("pause", () => { b.pause(); b.currentTime = a.currentTime; });
}

// --- helpers for the other tabs ----------------------------------------------------------------

function hasKey() { return page.auth === "open" || !!$("api-key").value.trim(); }

function requireKey() {
  if (hasKey()) return true;
  showError(new Error("Enter an API key first."));
  $("api-key").focus();
  return false;
}

// object URLs kept per owner ("design", "sweep", …), so one part of the page can let go of its own
const ownedURLs = {};
function ownedURL(owner, blob) {
  const url = URL.createObjectURL(blob);
  (ownedURLs[owner] = ownedURLs[owner] || []).push(url);
  return url;
}
function revokeOwned(owner) { (ownedURLs[owner] || []).splice(0).forEach((u) => URL.revokeObjectURL(u)); }

function base64Bytes(b64) {
  const raw = atob(b64);
  const bytes = new Uint8Array(raw.length);
  for (let i = 0; i < raw.length; i++) bytes[i] = raw.charCodeAt(i);
  return bytes;
}

function jobFileURL(id, path) { return `/v1/jobs/${encodeURIComponent(id)}/files/${path.split("/").map(encodeURIComponent).join("/")}`; }

function intField(id) { const v = $(id).value.trim(); return v === "" ? null : parseInt(v, 10); }
function numberField(id) { const v = $(id).value.trim(); return v === "" ? null : parseFloat(v); }

// --- the job widget: one for every job on the page ----------------------------------------------

// Every <div id="PREFIX-job" class="job"> gets a copy of the #job-widget template, its parts
// named PREFIX-progress, PREFIX-cancel, PREFIX-state, PREFIX-rate and PREFIX-eta.
function jobWidgets() {
  const template = $("job-widget");
  for (const box of document.querySelectorAll("div.job[id$='-job']")) {
    const prefix = box.id.slice(0, -"-job".length);
    const widget = template.content.cloneNode(true);
    for (const part of widget.querySelectorAll("[data-part]")) part.id = `${prefix}-${part.dataset.part}`;
    widget.querySelector("label").htmlFor = `${prefix}-progress`;
    box.replaceChildren(widget);
  }
}

function showJobIn(prefix, job) {
  const unit = job.unit ? `${job.unit}s/s` : "/s";
  const rate = job.rate ?? job.fps;
  const pct = Math.round((job.progress || 0) * 100);
  $(`${prefix}-progress`).value = job.progress || 0;
  $(`${prefix}-progress`).textContent = `${pct} %`;
  $(`${prefix}-state`).textContent = `${job.state} ${pct} %`;
  $(`${prefix}-rate`).textContent = rate != null ? `${rate.toFixed(2)} ${unit}` : `– ${unit}`;
  const done = JOB_DONE.includes(job.state);
  $(`${prefix}-eta`).textContent = done ? "done" : formatEta(job.eta_seconds);
  $(`${prefix}-cancel`).disabled = done;
}

function jobStatus(job) { return job.state === "cancelled" ? `Job ${job.id} was cancelled.` : `Job ${job.id}: ${job.state}.`; }

// Submit a job (a FormData with its kind) and show it in the `${prefix}-job` widget, whose
// Cancel button cancels it; resolves with the job as submitted.
async function startJob(prefix, form, { status, signal }) {
  const job = await (await api("/v1/jobs", { method: "POST", body: form, signal })).json();
  const report = (j) => { showJobIn(prefix, j); status(jobStatus(j)); };
  $(`${prefix}-job`).hidden = false;
  const cancel = $(`${prefix}-cancel`);
  cancel.onclick = async () => {
    cancel.disabled = true;
    try {
      report(await (await api(`/v1/jobs/${job.id}`, { method: "DELETE" })).json());
    } catch (err) { showError(err); }
  };
  report(job);
  return job;
}

// Follow a started job in its widget, reporting to `status(text)`; resolves with the final job
// (null if `signal` stopped the watch), throws the job's error if it failed.
async function followJobIn(prefix, job, { status, signal }) {
  const last = await followJob(job.id, (j) => { showJobIn(prefix, j); status(jobStatus(j)); }, signal);
  if (signal.aborted || !last) return null;
  if (last.state === "failed") throw new Error(last.error || "the job failed");
  return last;
}

async function runJob(prefix, form, how) { return followJobIn(prefix, await startJob(prefix, form, how), how); }

// Fetch a finished job's result into a download link (the key goes in a header, so a blob URL).
async function resultLink(job, linkId, owner, fallbackName, signal) {
  const res = await api(job.result_url || `/v1/jobs/${job.id}/result`, { signal });
  const blob = await res.blob();
  const named = /filename="?([^";]+)"?/.exec(res.headers.get("Content-Disposition") || "");
  const link = $(linkId);
  revokeOwned(owner);
  link.href = ownedURL(owner, blob);
  link.download = named ? named[1] : fallbackName;
  return blob;
}

// --- tabs ------------------------------------------------------------------------------------

function selectTab(name, { focus = false, hook = true } = {}) {
  if (!TABS.includes(name)) name = "upscale";
  for (const t of TABS) {
    const on = t === name;
    const tab = $(`tab-${t}`);
    tab.setAttribute("aria-selected", String(on));
    tab.tabIndex = on ? 0 : -1;
    $(`panel-${t}`).hidden = !on;
  }
  if (focus) $(`tab-${name}`).focus();
  if (location.hash.slice(1) !== name) history.replaceState(null, "", `#${name}`);
  if (page.tab !== name) showError(null);
  page.tab = name;
  if (hook && tabHooks[name]) tabHooks[name]();
}

function initTabs() {
  const list = document.querySelector("[role=tablist]");
  list.addEventListener("click", (e) => {
    const tab = e.target.closest("[role=tab]");
    if (tab) selectTab(tab.id.replace(/^tab-/, ""));
  });
  list.addEventListener("keydown", (e) => {
    const i = TABS.indexOf(page.tab);
    const to = { ArrowRight: i + 1, ArrowLeft: i - 1, Home: 0, End: TABS.length - 1 }[e.key];
    if (to === undefined) return;
    e.preventDefault();
    selectTab(TABS[(to + TABS.length) % TABS.length], { focus: true });
  });
  window.addEventListener("hashchange", () => selectTab(location.hash.slice(1)));
  selectTab(location.hash.slice(1), { hook: false }); // at once; its data once the key is known
}

// --- wiring ----------------------------------------------------------------------------------

async function submit(event) {
  event.preventDefault();
  const file = $("file").files[0];
  resetResult();
  if (!file) { showError(new Error("Choose an image or a video first.")); $("file").focus(); return; }
  if (page.auth !== "open" && !$("api-key").value.trim()) {
    showError(new Error("Enter an API key first.")); $("api-key").focus(); return;
  }
  const button = $("upscale");
  button.disabled = true;
  try {
    await (fileKind(file) === "video" ? submitVideo(file) : upscaleImage(file));
  } catch (err) {
    setStatus("");
    showError(err);
  } finally {
    button.disabled = false;
  }
}

async function init() {
  jobWidgets();
  initTabs();
  try {
    page.auth = (await (await fetch("/page-config.json")).json()).auth;
  } catch (_) { /* assume keys */ }
  $("key-row").hidden = page.auth === "open";
  $("api-key").value = localStorage.getItem(KEY_STORE) || "";
  let timer;
  $("api-key").addEventListener("input", () => {
    localStorage.setItem(KEY_STORE, $("api-key").value.trim());
    clearTimeout(timer);
    timer = setTimeout(() => {
      loadModels();
      if (page.tab !== "upscale" && tabHooks[page.tab]) tabHooks[page.tab]();
    }, 300);
  });
  $("model").addEventListener("change", () => { page.modelChosen = true; });
  $("file").addEventListener("change", applyKind);
  $("scale").addEventListener("change", () => {
    document.querySelectorAll(".size-only").forEach((el) => { el.hidden = $("scale").value !== "size"; });
  });
  $("split").addEventListener("input", () => $("compare").style.setProperty("--split", `${$("split").value}%`));
  $("form").addEventListener("submit", submit);
  $("key-row").addEventListener("submit", (e) => e.preventDefault()); // Enter in the key field
  syncVideos();
  applyKind();
  if (page.tab !== "upscale" && tabHooks[page.tab]) tabHooks[page.tab]();
  await loadModels();
}

document.addEventListener("DOMContentLoaded", init);
