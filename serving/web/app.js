// genai web page: plain JavaScript, no build step, nothing loaded from elsewhere.
"use strict";

const $ = (id) => document.getElementById(id);
const KEY_STORE = "genai.apiKey";
const EXT = { "image/png": "png", "image/jpeg": "jpg", "image/webp": "webp", "image/tiff": "tif" };
const VIDEO_EXT = /\.(mp4|m4v|mov|mkv|webm|avi|ts|mts|m2ts|mpg|mpeg)$/i;
const page = { auth: "keys", defaults: {}, modelChosen: false, urls: [], job: null, watch: null };

// --- API -------------------------------------------------------------------------------------

function authHeaders() {
  const key = $("api-key").value.trim();
  return page.auth === "open" || !key ? {} : { Authorization: `Bearer ${key}` };
}

async function api(path, options = {}) {
  const res = await fetch(path, { ...options, headers: { ...authHeaders(), ...(options.headers || {}) } });
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
  page.job = null;
  page.urls.splice(0).forEach((u) => URL.revokeObjectURL(u));
  for (const id of ["result", "job", "compare", "videos", "output"]) $(id).hidden = true;
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
  const job = await (await api("/v1/jobs", { method: "POST", body: form })).json();
  $("original-video").src = objectURL(file);
  $("progress").value = 0;
  $("job").hidden = $("videos").hidden = $("result").hidden = false;
  $("cancel").disabled = false;
  showJob(job);
  watchJob(job.id);
}

function formatEta(s) {
  if (s == null) return "ETA –";
  s = Math.round(s);
  return s >= 60 ? `ETA ${Math.floor(s / 60)} min ${s % 60} s` : `ETA ${s} s`;
}

function showJob(job) {
  page.job = job;
  $("progress").value = job.progress || 0;
  $("progress").textContent = `${Math.round((job.progress || 0) * 100)} %`;
  $("job-state").textContent = `${job.state} ${Math.round((job.progress || 0) * 100)} %`;
  $("job-fps").textContent = job.fps != null ? `${job.fps.toFixed(1)} fps` : "– fps";
  $("job-eta").textContent = formatEta(job.eta_seconds);
  const done = ["succeeded", "failed", "cancelled"].includes(job.state);
  $("cancel").disabled = done;
  if (!done) setStatus(`Job ${job.id}: ${job.state}.`);
  else if (job.state === "failed") {
    setStatus(`Job ${job.id} failed.`);
    showError(new Error(job.error || "the job failed"));
  }
  else if (job.state === "cancelled") setStatus(`Job ${job.id} was cancelled.`);
}

// EventSource cannot send an Authorization header: read the stream with fetch and parse it here.
async function watchJob(id) {
  const ctrl = new AbortController();
  page.watch = ctrl;
  let failures = 0;
  while (!ctrl.signal.aborted) {
    try {
      const res = await api(`/v1/jobs/${id}/events`, { signal: ctrl.signal, headers: { Accept: "text/event-stream" } });
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
          if (data.length) { showJob(JSON.parse(data.join("\n"))); failures = 0; }
        }
      }
    } catch (err) {
      if (ctrl.signal.aborted) return;
      if (err.status || ++failures > 5) { showError(err); return; }
    }
    if (page.job && ["succeeded", "failed", "cancelled"].includes(page.job.state)) break;
    await new Promise((r) => setTimeout(r, 1000)); // the stream dropped: reconnect
  }
  if (!ctrl.signal.aborted && page.job && page.job.state === "succeeded") await fetchResult(page.job, ctrl.signal);
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

async function cancelJob() {
  if (!page.job) return;
  $("cancel").disabled = true;
  try {
    showJob(await (await api(`/v1/jobs/${page.job.id}`, { method: "DELETE" })).json());
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
  try {
    page.auth = (await (await fetch("/page-config.json")).json()).auth;
  } catch (_) { /* assume keys */ }
  $("key-row").hidden = page.auth === "open";
  $("api-key").value = localStorage.getItem(KEY_STORE) || "";
  let timer;
  $("api-key").addEventListener("input", () => {
    localStorage.setItem(KEY_STORE, $("api-key").value.trim());
    clearTimeout(timer);
    timer = setTimeout(loadModels, 300);
  });
  $("model").addEventListener("change", () => { page.modelChosen = true; });
  $("file").addEventListener("change", applyKind);
  $("scale").addEventListener("change", () => {
    document.querySelectorAll(".size-only").forEach((el) => { el.hidden = $("scale").value !== "size"; });
  });
  $("split").addEventListener("input", () => $("compare").style.setProperty("--split", `${$("split").value}%`));
  $("cancel").addEventListener("click", cancelJob);
  $("form").addEventListener("submit", submit);
  syncVideos();
  applyKind();
  await loadModels();
}

document.addEventListener("DOMContentLoaded", init);
