// The Synthetic-data tab: train a class-conditional generator on an uploaded ImageFolder zip (a
// job; optionally with a zip of unlabelled images, the pool), sample a labelled grid from it
// (synchronous), make a labelled data set (a job).
// Uses the helpers of app.js.
"use strict";

const synth = { generators: [], loadedKey: null, train: null, dataset: null };

function trainStatus(text) { $("train-status").textContent = text; }
function sampleStatus(text) { $("sample-status").textContent = text; }
function datasetStatus(text) { $("dataset-status").textContent = text; }

// --- generators ------------------------------------------------------------------------------

async function loadGenerators({ select = null, force = false } = {}) {
  if (!hasKey()) return;
  const key = $("api-key").value.trim();
  if (!force && synth.loadedKey === key) return;
  try {
    const data = await (await api("/v1/generators")).json();
    synth.generators = data.generators || [];
    synth.loadedKey = key;
    const box = $("generator");
    const keep = select || box.value;
    if (!synth.generators.length) {
      box.replaceChildren(new Option("– no trained generator yet –", ""));
    } else {
      box.replaceChildren(...synth.generators.map((g) => {
        const classes = g.classes || [];
        const shown = classes.slice(0, 5).join(", ") + (classes.length > 5 ? ", …" : "");
        const size = Array.isArray(g.size) ? ` · ${g.size.join("×")} px` : "";
        return new Option(`${g.name || g.id} · ${classes.length} classes (${shown})${size}`, g.id);
      }));
      if (keep && synth.generators.some((g) => g.id === keep)) box.value = keep;
    }
  } catch (err) {
    showError(err.status === 401 ? new Error(`API key: ${err.message}`) : err);
  }
}

function chosenGenerator() {
  const id = $("generator").value;
  if (!id) {
    showError(new Error("Train a generator first (or choose one)."));
    $("generator").focus();
  }
  return id;
}

function samplingFields() {
  const out = {};
  const steps = intField("sample-steps");
  const guidance = numberField("sample-guidance");
  const seed = intField("sample-seed");
  if (steps != null) out.steps = steps;
  if (guidance != null) out.guidance = guidance;
  if (seed != null) out.seed = seed;
  return out;
}

// --- train -----------------------------------------------------------------------------------

async function train(event) {
  event.preventDefault();
  showError(null);
  if (!requireKey()) return;
  const file = $("train-file").files[0];
  if (!file) { showError(new Error("Choose a zip of an image folder first.")); $("train-file").focus(); return; }
  const form = new FormData();
  form.append("kind", "synth-train");
  form.append("file", file);
  const pool = $("train-pool").files[0];
  if (pool) form.append("pool", pool);
  const steps = intField("train-steps");
  const size = intField("train-size");
  const batch = intField("train-batch");
  if (steps != null) form.append("steps", String(steps));
  if (size != null) form.append("size", String(size));
  if (batch != null) form.append("batch", String(batch));
  if ($("train-hflip").checked) form.append("hflip", "true");

  if (synth.train) synth.train.abort();
  const ctrl = new AbortController();
  synth.train = ctrl;
  const button = $("train");
  button.disabled = true;
  trainStatus(pool ? `Uploading ${file.name} and ${pool.name}…` : `Uploading ${file.name}…`);
  try {
    const job = await runJob("train", form, { status: trainStatus, signal: ctrl.signal });
    if (!job || job.state !== "succeeded") return;
    await loadGenerators({ select: job.id, force: true });
    trainStatus(`Generator ${job.id} is trained: choose it below to sample.`);
  } catch (err) {
    if (ctrl.signal.aborted) return;
    trainStatus("");
    showError(err);
  } finally {
    if (synth.train === ctrl) button.disabled = false;
  }
}

// --- sample ----------------------------------------------------------------------------------

async function sample(event) {
  event.preventDefault();
  showError(null);
  if (!requireKey()) return;
  const generator = chosenGenerator();
  if (!generator) return;
  const body = { generator, per_class: intField("sample-per-class") ?? 4, ...samplingFields() };
  const button = $("sample");
  button.disabled = true;
  sampleStatus("Sampling…");
  try {
    const data = await (await api("/v1/synth:sample", {
      method: "POST", headers: { "Content-Type": "application/json" }, body: JSON.stringify(body),
    })).json();
    showSamples(data);
    sampleStatus(`${(data.images || []).length} images of ${(data.classes || []).length} classes.`);
  } catch (err) {
    sampleStatus("");
    showError(err);
  } finally {
    button.disabled = false;
  }
}

// the grid has one row per class (data.rows): its labels stand beside the rows
function showSamples(data) {
  revokeOwned("samples");
  const img = $("sample-grid");
  img.src = ownedURL("samples", new Blob([base64Bytes(data.grid_png)], { type: "image/png" }));
  const counts = new Map();
  for (const im of data.images || []) counts.set(im.label, (counts.get(im.label) || 0) + 1);
  const rows = data.rows || [...counts.keys()];
  const labels = $("sample-labels");
  labels.style.gridTemplateRows = `repeat(${Math.max(1, rows.length)}, 1fr)`;
  labels.replaceChildren(...rows.map((label) => {
    const li = document.createElement("li");
    const name = document.createElement("span");
    name.className = "label";
    name.textContent = label;
    li.append(name, ` × ${counts.get(label) || 0}`);
    return li;
  }));
  img.alt = `Generated images, one row per class: ${rows.join(", ")}`;
  $("sample-result").hidden = false;
}

// --- data set --------------------------------------------------------------------------------

async function makeDataset() {
  showError(null);
  if (!requireKey()) return;
  const generator = chosenGenerator();
  if (!generator) return;
  const form = new FormData();
  form.append("kind", "synth-sample");
  form.append("generator", generator);
  form.append("per_class", String(intField("dataset-per-class") ?? 100));
  for (const [k, v] of Object.entries(samplingFields())) form.append(k, String(v));

  if (synth.dataset) synth.dataset.abort();
  const ctrl = new AbortController();
  synth.dataset = ctrl;
  revokeOwned("dataset");
  $("dataset-output").hidden = true;
  const button = $("make-dataset");
  button.disabled = true;
  datasetStatus("Submitting…");
  try {
    const job = await runJob("dataset", form, { status: datasetStatus, signal: ctrl.signal });
    if (!job || job.state !== "succeeded") return;
    datasetStatus(`Job ${job.id} succeeded; downloading the data set…`);
    const blob = await resultLink(job, "dataset-download", "dataset", `${generator}_dataset.zip`, ctrl.signal);
    $("dataset-output").hidden = false;
    datasetStatus(`Data set ready (${(blob.size / 1048576).toFixed(1)} MB).`);
  } catch (err) {
    if (ctrl.signal.aborted) return;
    datasetStatus("");
    showError(err);
  } finally {
    if (synth.dataset === ctrl) button.disabled = false;
  }
}

// --- wiring ----------------------------------------------------------------------------------

function initSynth() {
  tabHooks.synth = () => loadGenerators({ force: true }); // jobs may have finished meanwhile
  $("train-form").addEventListener("submit", train);
  $("sample-form").addEventListener("submit", sample);
  $("make-dataset").addEventListener("click", makeDataset);
}

initSynth();
