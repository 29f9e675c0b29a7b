"""Pseudo-labels for the unlabelled pool, with a confidence threshold chosen by cross-validation.

A classifier (``quality.SmallCNN`` with ``quality.StrongAugment``) trained on the labelled set
labels every pool image; the labels whose confidence (softmax maximum) reaches the threshold
join the generator's class-conditional training (DPT, You et al. 2023, does the same with a
self-supervised classifier). The threshold is the lowest of ``CANDIDATES`` whose pseudo-labels are
estimated to be at least ``target_accuracy`` right: the estimate comes from ``folds``-fold
cross-validation on the labelled set (each fold's images labelled by a classifier trained on
the others, which is a little weaker than the final one, so the estimate errs on the safe side).
The same classifier filters sampled images later (``classifier.safetensors`` in the run).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field

import numpy as np
import torch

from genai.progress import CancelFn, Progress, ProgressFn
from genai.synth import quality as Q
from genai.synth.data import LabelledImages

log = logging.getLogger("genai.synth")
CANDIDATES = (0.5, 0.6, 0.7, 0.8, 0.85, 0.9, 0.95, 0.98)
CLASSIFIER = "classifier.safetensors"


def load_classifier(path, channels: int, classes: int) -> Q.SmallCNN:
    from safetensors.torch import load_file

    model = Q.SmallCNN(channels, classes)
    model.load_state_dict(load_file(str(path)))
    return model.eval()


@dataclass(frozen=True)
class PseudoConfig:
    threshold: float | None = None  # None: chosen by cross-validation
    target_accuracy: float = 0.9
    folds: int = 5
    steps: int = 1500  # classifier training steps (batches of 64)
    hflip: bool = False  # a mirror keeps the label (StrongAugment flips then)
    seed: int = 0


@dataclass
class PseudoLabels:
    labels: np.ndarray  # per pool image: a class index, or -1 where the classifier is not confident
    confidence: np.ndarray
    threshold: float
    chosen_by: str
    cv_accuracy: float | None  # estimated accuracy of the kept pseudo-labels (cross-validated), None without CV
    cv_table: list[dict] = field(default_factory=list)  # per candidate: threshold, held-out share kept, accuracy

    @property
    def coverage(self) -> float:
        return float((self.labels >= 0).mean()) if len(self.labels) else 0.0

    def summary(self) -> dict:
        return {"threshold": self.threshold, "chosen_by": self.chosen_by, "coverage": round(self.coverage, 4),
                "estimated_accuracy": None if self.cv_accuracy is None else round(self.cv_accuracy, 4),
                "confident": int((self.labels >= 0).sum()), "pool": len(self.labels), "cv": self.cv_table}


def train_labeller(data: LabelledImages, cfg: PseudoConfig, seed: int, cancel: CancelFn | None = None,
                   progress: ProgressFn | None = None) -> Q.SmallCNN:
    return Q.train_classifier(data.images, data.labels, len(data.classes), steps=cfg.steps, seed=seed,
                              augment=Q.StrongAugment(hflip=cfg.hflip), progress=progress, cancel=cancel)


@torch.inference_mode()
def probabilities(model: Q.SmallCNN, images: np.ndarray, batch_size: int = 1000) -> np.ndarray:
    """Softmax outputs for uint8 NHWC images (a memmap is read batch by batch)."""
    out = [torch.softmax(model(Q.to_tensor(np.asarray(images[i:i + batch_size]))), 1).numpy()
           for i in range(0, len(images), batch_size)]
    return np.concatenate(out) if out else np.zeros((0, model.head.out_features), np.float32)


def _folds(labels: np.ndarray, folds: int, seed: int) -> np.ndarray:
    """Stratified fold index per image."""
    rng = np.random.default_rng(seed)
    fold = np.empty(len(labels), np.int64)
    for c in np.unique(labels):
        idx = rng.permutation(np.flatnonzero(labels == c))
        fold[idx] = np.arange(len(idx)) % folds
    return fold


def cross_validate(data: LabelledImages, cfg: PseudoConfig, *, progress: ProgressFn | None = None,
                   cancel: CancelFn | None = None) -> tuple[np.ndarray, np.ndarray] | None:
    """(confidence, right) of every labelled image, each predicted by a classifier that did not see
    it; None when a class has fewer than two images."""
    folds = min(cfg.folds, int(min(data.counts().values())))
    if folds < 2:
        return None
    fold = _folds(data.labels, folds, cfg.seed)
    conf, right = np.zeros(len(data)), np.zeros(len(data), bool)
    for f in range(folds):
        model = train_labeller(data.subset(np.flatnonzero(fold != f)), cfg, cfg.seed + 1 + f, cancel)
        held = np.flatnonzero(fold == f)
        p = probabilities(model, data.images[held])
        conf[held], right[held] = p.max(1), p.argmax(1) == data.labels[held]
        if progress:
            progress(Progress(f + 1, folds + 1, "labeller"))
    return conf, right


def choose_threshold(conf: np.ndarray, right: np.ndarray, target: float) -> tuple[float, float | None, str, list[dict]]:
    """The lowest candidate whose held-out pseudo-labels are >= ``target`` right (at least 5 kept),
    else the most accurate one: (threshold, its estimated accuracy, why, the table)."""
    table = []
    for t in CANDIDATES:
        kept = conf >= t
        table.append({"threshold": t, "kept": round(float(kept.mean()), 4),
                      "accuracy": round(float(right[kept].mean()), 4) if kept.sum() >= 5 else None})
    ok = [r for r in table if r["accuracy"] is not None and r["accuracy"] >= target]
    rated = [r for r in table if r["accuracy"] is not None]
    if ok:
        return ok[0]["threshold"], ok[0]["accuracy"], f"the lowest threshold with an estimated accuracy >= {target}", table
    if rated:
        best = max(rated, key=lambda r: r["accuracy"])
        return best["threshold"], best["accuracy"], f"no threshold reached {target}: the most accurate one", table
    return CANDIDATES[-1], None, "the classifier was never confident on held-out images: the highest threshold", table


def pseudo_label(data: LabelledImages, pool_images: np.ndarray, cfg: PseudoConfig = PseudoConfig(), *,
                 progress: ProgressFn | None = None,
                 cancel: CancelFn | None = None) -> tuple[PseudoLabels, Q.SmallCNN]:
    """Label the pool; returns the labels and the classifier trained on all of ``data``."""
    cv = cross_validate(data, cfg, progress=progress, cancel=cancel)
    if cfg.threshold is not None:
        threshold, chosen_by, table = cfg.threshold, "given", []
        accuracy = None
        if cv is not None:
            kept = cv[0] >= threshold
            accuracy = float(cv[1][kept].mean()) if kept.any() else None
    elif cv is None:
        threshold, accuracy, table = 0.9, None, []
        chosen_by = "default (a class has fewer than two labelled images: no cross-validation)"
    else:
        threshold, accuracy, why, table = choose_threshold(*cv, cfg.target_accuracy)
        chosen_by = f"{min(cfg.folds, int(min(data.counts().values())))}-fold cross-validation: {why}"
    model = train_labeller(data, cfg, cfg.seed, cancel)
    p = probabilities(model, pool_images)
    conf = p.max(1) if len(p) else np.zeros(0)
    labels = np.where(conf >= threshold, p.argmax(1) if len(p) else 0, -1).astype(np.int64)
    if progress:
        progress(Progress(1, 1, "labeller"))
    result = PseudoLabels(labels, conf.astype(np.float32), threshold, chosen_by, accuracy, table)
    log.info("pseudo-labels: threshold %.2f (%s); %d of %d pool images (%.0f%%) confident, estimated %s right",
             threshold, chosen_by, int((labels >= 0).sum()), len(labels), 100 * result.coverage,
             "?" if accuracy is None else f"{100 * accuracy:.1f}%")
    return result, model
