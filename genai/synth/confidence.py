"""Sampling with a confidence filter: a classifier trained on the user's real images (the run's
``classifier.safetensors``, the pseudo-labeller) drops every sample it does not assign to the
label it was made for, and sampling goes on until each class has its count or has used
``max_draws`` candidates per image asked (then the shortfall is reported, not hidden).

Candidate ``j`` of class ``c`` (of ``C``) has the seed ``seed + j * C + c``, so every kept image
is fixed by its seed (its file name) and a rerun makes exactly the missing ones: the work
folder keeps ``draws.json`` (candidates drawn and kept per class), written after each batch.
"""

from __future__ import annotations

import json
import logging
from pathlib import Path

import numpy as np

from genai.paths import atomic_path
from genai.progress import CancelFn, Progress, ProgressFn
from genai.synth.data import write_imagefolder
from genai.synth.pseudo import load_classifier, probabilities

log = logging.getLogger("genai.synth")
DRAWS = "draws.json"


def filtered_samples(gen, work_dir: Path, out: Path, counts: dict[str, int], *, seed: int, sample_kwargs: dict,
                     batch_size: int, max_draws: float, soft_labels: bool = False,
                     progress: ProgressFn | None = None, cancel: CancelFn | None = None) -> dict:
    """Fill ``work_dir/CLASS/SEED.png`` with ``counts`` accepted samples; returns the filter's report."""
    meta = gen.meta["classifier"]
    model = load_classifier(gen.run / meta["file"], int(gen.meta["channels"]), len(gen.classes))
    n = len(gen.classes)
    state_path = work_dir / DRAWS
    state = json.loads(state_path.read_text()) if state_path.exists() else \
        {"drawn": {c: 0 for c in gen.classes}, "kept": {c: 0 for c in gen.classes}, "soft": {}}
    total = sum(counts.values())

    def have(c: str) -> int:
        folder = work_dir / c
        return sum(1 for _ in folder.glob("*.png")) if folder.is_dir() else 0

    while True:
        short = {c: counts[c] - have(c) for c in gen.classes
                 if counts[c] > have(c) and state["drawn"][c] < max_draws * counts[c]}
        if not short:
            break
        share = max(1, batch_size // len(short))  # one batch holds candidates of every short class
        labels, seeds = [], []
        for c, need in short.items():
            i = gen.classes.index(c)
            m = min(share, need + need // 2 + 1, int(max_draws * counts[c]) - state["drawn"][c])
            for j in range(state["drawn"][c], state["drawn"][c] + m):
                labels.append(i)
                seeds.append(seed + j * n + i)
            state["drawn"][c] += m
        labels = np.asarray(labels, np.int64)
        images = gen.sample(labels, seeds=seeds, batch_size=batch_size, cancel=cancel, **sample_kwargs)
        p = probabilities(model, images)
        ok = p.argmax(1) == labels
        for c, need in short.items():  # the first accepted ones, up to the count
            i = gen.classes.index(c)
            pick = np.flatnonzero(ok & (labels == i))[:need]
            names = [f"{seeds[k]:08d}" for k in pick]
            write_imagefolder(work_dir, images[pick], labels[pick], gen.classes, names)
            state["kept"][c] += len(pick)
            if soft_labels:
                state["soft"].update({f"{c}/{name}.png": [round(float(v), 4) for v in p[k]]
                                      for name, k in zip(names, pick, strict=True)})
        with atomic_path(state_path) as tmp:  # after the images: a stop in between redraws the same seeds
            tmp.write_text(json.dumps(state))
        if progress:
            progress(Progress(sum(min(have(c), counts[c]) for c in gen.classes), total, "sample"))
    drawn, kept = sum(state["drawn"].values()), sum(have(c) for c in gen.classes)
    missing = {c: counts[c] - have(c) for c in gen.classes if have(c) < counts[c]}
    if missing:
        log.warning("%s: the classifier accepted too few samples of %s within %g draws per image: %s short",
                    out, ", ".join(missing), max_draws, ", ".join(f"{c} {m}" for c, m in missing.items()))
    report = {"classifier_sha256": meta["sha256"], "drawn": drawn, "kept": kept,
              "rejected_rate": round(1 - kept / drawn, 4) if drawn else 0.0,
              "per_class": {c: {"drawn": state["drawn"][c], "kept": have(c)} for c in gen.classes},
              "max_draws_per_image": max_draws, "short": missing}
    log.info("%s: the confidence filter kept %d of %d samples (%.1f%% rejected)", out, kept, drawn,
             100 * report["rejected_rate"])
    if soft_labels:
        report["soft_labels"] = state["soft"]
    state_path.unlink()
    return report
