// The Design tab: propose one design (synchronous) or sweep variants (a job), shown in the
// 3D view (glb-view.js) with a preview and metrics. Uses the helpers of app.js.
"use strict";

const design = { problems: [], loadedKey: null, view: null, sweep: null, shown: 0, job: null };

function designStatus(text) { $("design-status").textContent = text; }
function sweepStatus(text) { $("sweep-status").textContent = text; }

function fmt(x, digits = 4) {
  if (typeof x !== "number" || !isFinite(x)) return "–";
  return Math.abs(x) >= 1e5 || (x !== 0 && Math.abs(x) < 1e-3) ? x.toExponential(digits - 1) : String(+x.toPrecision(digits));
}

// --- problems --------------------------------------------------------------------------------

async function loadProblems() {
  if (!hasKey()) return;
  const key = $("api-key").value.trim();
  if (design.loadedKey === key && design.problems.length) return;
  try {
    const data = await (await api("/v1/design/problems")).json();
    // each: {name, dim, resolution: [nelx, nely(, nelz)], volume_fraction, proposable}
    design.problems = (data.problems || []).map((p) => {
      const res = p.resolution || [p.nelx, p.nely, p.nelz].filter((n) => n);
      const dim = p.dim || res.length;
      return { ...p, dim, nelx: res[0], nely: res[1], nelz: res[2], proposable: p.proposable ?? dim === 2 };
    });
    design.loadedKey = key;
    const select = $("design-problem");
    const keep = select.value;
    select.replaceChildren(...design.problems.map((p) => {
      const grid = [p.nelx, p.nely, p.nelz].filter((n) => n).join("×");
      return new Option(`${p.name} (${p.dim}D${grid ? `, ${grid}` : ""})`, p.name);
    }));
    if (keep && design.problems.some((p) => p.name === keep)) select.value = keep;
    applyProblem();
  } catch (err) {
    showError(err.status === 401 ? new Error(`API key: ${err.message}`) : err);
  }
}

function currentProblem() { return design.problems.find((p) => p.name === $("design-problem").value); }

function applyProblem() {
  const p = currentProblem();
  const dim3 = !!p && p.dim === 3;
  document.querySelectorAll("#panel-design .dim3-only").forEach((el) => { el.hidden = !dim3; });
  for (const axis of ["nelx", "nely", "nelz"]) {
    $(`design-${axis}`).placeholder = p && p[axis] ? String(p[axis]) : "catalog";
  }
  $("design-volfrac").placeholder = p && p.volume_fraction ? String(p.volume_fraction) : "problem's";
  const proposable = !p || p.proposable;
  $("propose").disabled = !proposable;
  $("problem-hint").textContent = proposable ? "" : "3D: sweep only (the learned generator proposes 2D designs).";
}

function gridFields() {
  const out = {};
  for (const axis of ["nelx", "nely", "nelz"]) {
    const v = intField(`design-${axis}`);
    if (v != null && !(axis === "nelz" && $(`design-${axis}`).closest(".field").hidden)) out[axis] = v;
  }
  const volfrac = numberField("design-volfrac");
  if (volfrac != null) out.volfrac = volfrac;
  return out;
}

function chosenProblem() {
  const name = $("design-problem").value;
  if (!name) {
    showError(new Error(design.problems.length ? "Choose a problem first." : "No problems loaded: check the API key."));
    $("design-problem").focus();
  }
  return name;
}

// --- the view: 3D mesh, preview, metrics ---------------------------------------------------------

function viewer() {
  if (design.view) return design.view;
  try {
    design.view = new GlbView($("glb-canvas"));
  } catch (err) {
    $("glb-canvas").hidden = true;
    $("glb-canvas").nextElementSibling.textContent = err.message;
    return null;
  }
  return design.view;
}

// glb: bytes (ArrayBuffer or Uint8Array); preview: a Blob; metrics: text
function showDesign({ title, glb, preview, metrics, glbName }) {
  revokeOwned("design");
  $("design-view").hidden = false;
  $("design-title").textContent = title;
  $("design-metrics").textContent = metrics;
  const img = $("design-preview");
  if (preview) img.src = ownedURL("design", preview);
  else img.removeAttribute("src");
  const link = $("design-glb");
  link.href = ownedURL("design", new Blob([glb], { type: "model/gltf-binary" }));
  link.download = glbName;
  link.hidden = false;
  const view = viewer();
  if (view) {
    try {
      view.load(glb);
      $("glb-canvas").dataset.design = title;
    } catch (err) {
      view.clear();
      showError(new Error(`3D view: ${err.message}`));
    }
  }
}

// --- propose ---------------------------------------------------------------------------------

async function propose(event) {
  event.preventDefault();
  showError(null);
  if (!requireKey()) return;
  const problem = chosenProblem();
  if (!problem) return;
  const body = { problem, ...gridFields() };
  delete body.nelz;
  const refine = intField("design-refine");
  if (refine != null) body.refine = refine;
  const button = $("propose");
  button.disabled = true;
  designStatus(`Proposing a design for ${problem}…`);
  try {
    const res = await api("/v1/designs:propose", {
      method: "POST", headers: { "Content-Type": "application/json" }, body: JSON.stringify(body),
    });
    const data = await res.json();
    const m = data.metrics || {};
    const grid = body.nelx && body.nely ? ` ${body.nelx}×${body.nely}` : "";
    showDesign({
      title: `Proposal: ${problem}${grid}`,
      glb: base64Bytes(data.glb),
      preview: new Blob([base64Bytes(data.preview_png)], { type: "image/png" }),
      metrics: `compliance ${fmt(m.compliance)} · volume fraction ${fmt(m.volume_fraction, 3)} · ` +
               `proposal ${fmt(m.proposal_ms, 3)} ms` + (m.refine_iterations != null ? ` · ${m.refine_iterations} refine iterations` : ""),
      glbName: `${problem}_proposal.glb`,
    });
    designStatus(`Proposed in ${fmt(m.proposal_ms, 3)} ms${m.refine_iterations != null ? `, then ${m.refine_iterations} optimizer iterations` : ""}.`);
  } catch (err) {
    designStatus("");
    showError(err);
  } finally {
    applyProblem(); // re-enables Propose unless the problem is 3D
  }
}

// --- sweep -----------------------------------------------------------------------------------

async function sweep(event) {
  event.preventDefault();
  showError(null);
  if (!requireKey()) return;
  const problem = chosenProblem();
  if (!problem) return;
  const form = new FormData();
  form.append("kind", "design");
  form.append("problem", problem);
  for (const [k, v] of Object.entries(gridFields())) form.append(k, String(v));
  const n = intField("sweep-n");
  if (n != null) form.append("n", String(n));
  for (const v of $("sweep-vary").value.split(";").map((s) => s.trim()).filter(Boolean)) form.append("vary", v);

  if (design.sweep) design.sweep.abort(); // stop following an earlier sweep (it runs on)
  const ctrl = new AbortController();
  design.sweep = ctrl;
  design.job = null;
  revokeOwned("sweep");
  $("sweep-table").tBodies[0].replaceChildren();
  $("sweep-result").hidden = $("sweep-output").hidden = true;
  const button = $("sweep");
  button.disabled = true;
  sweepStatus(`Submitting a sweep of ${problem}…`);
  try {
    const job = await runJob("sweep", form, { status: sweepStatus, signal: ctrl.signal });
    if (!job || job.state !== "succeeded") return;
    sweepStatus(`Job ${job.id} succeeded; reading the ranking…`);
    const summary = await (await api(jobFileURL(job.id, "summary.json"), { signal: ctrl.signal })).json();
    design.job = job;
    showRanking(job, summary.designs || []);
    const front = (summary.designs || []).filter((d) => d.pareto).length;
    sweepStatus(`Sweep done: ${(summary.designs || []).length} designs, ${front} on the Pareto front.`);
    const rows = $("sweep-table").tBodies[0].rows;
    if (rows.length) showRow(rows[0]);
    await resultLink(job, "sweep-download", "sweep", `${job.input_name || problem}_designs.zip`, ctrl.signal);
    $("sweep-output").hidden = false;
  } catch (err) {
    if (ctrl.signal.aborted) return;
    sweepStatus("");
    showError(err);
  } finally {
    if (design.sweep === ctrl) button.disabled = false;
  }
}

function showRanking(job, designs) {
  const body = $("sweep-table").tBodies[0];
  body.replaceChildren(...designs.map((d) => {
    const tr = document.createElement("tr");
    tr.dataset.name = d.name;
    tr.dataset.job = job.id;
    const cell = (content, cls) => {
      const td = document.createElement("td");
      if (cls) td.className = cls;
      if (content instanceof Node) td.append(content); else td.textContent = content;
      return td;
    };
    const name = document.createElement("button");
    name.type = "button";
    name.className = "link";
    name.textContent = d.name;
    const values = Object.entries(d.values || {}).map(([k, v]) => `${k}=${fmt(v, 3)}`).join(", ");
    const mark = document.createElement("span");
    if (d.pareto) {
      mark.innerHTML = '<span aria-hidden="true">★</span><span class="visually-hidden">on the Pareto front</span>';
    }
    tr.append(cell(String(d.rank)), cell(name), cell(values), cell(fmt(d.mass), "num"), cell(fmt(d.compliance), "num"),
              cell(mark, "pareto"));
    tr.dataset.metrics = `mass ${fmt(d.mass)} · compliance ${fmt(d.compliance)} · volume fraction ` +
                         `${fmt(d.volume_fraction, 3)}${values ? ` · ${values}` : ""}${d.pareto ? " · Pareto front" : ""}`;
    return tr;
  }));
  $("sweep-result").hidden = false;
}

async function showRow(tr) {
  const token = ++design.shown;
  for (const row of tr.parentElement.rows) row.removeAttribute("aria-current");
  tr.setAttribute("aria-current", "true");
  const { name, job } = tr.dataset;
  $("design-view").setAttribute("aria-busy", "true");
  try {
    const [glb, preview] = await Promise.all([
      api(jobFileURL(job, `${name}/design.glb`)).then((r) => r.arrayBuffer()),
      api(jobFileURL(job, `${name}/preview.png`)).then((r) => r.blob()),
    ]);
    if (token !== design.shown) return; // another row was chosen meanwhile
    showDesign({ title: `Sweep: ${name} (rank ${tr.cells[0].textContent})`, glb, preview, metrics: tr.dataset.metrics,
                 glbName: `${name}.glb` });
  } catch (err) {
    if (token === design.shown) showError(err);
  } finally {
    if (token === design.shown) $("design-view").removeAttribute("aria-busy");
  }
}

// --- wiring ----------------------------------------------------------------------------------

function initDesign() {
  tabHooks.design = loadProblems;
  $("design-problem").addEventListener("change", applyProblem);
  $("design-form").addEventListener("submit", propose);
  $("sweep-form").addEventListener("submit", sweep);
  $("sweep-table").tBodies[0].addEventListener("click", (e) => {
    const tr = e.target.closest("tr");
    if (tr && tr.dataset.name) showRow(tr);
  });
}

initDesign();
