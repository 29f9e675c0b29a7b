"""Quality gates for a synthetic set, offline.

There are no Inception weights here, so distances are measured in the feature space of a
small CNN trained locally on the real data (``SmallCNN``, the penultimate layer): the FID and
KID below are *local* and not comparable to published (Inception) FID; they compare sets
made for the same real data. Also: precision/recall of the two feature sets (Kynkäänniemi et
al. 2019, k-NN balls), label fidelity (how often the real-data classifier agrees with the
label a synthetic image carries), a memorisation check (Gu et al. 2023: a sample whose nearest
training image is closer than 1/3 of the second nearest is a near-copy), and class balance.
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F

from genai.progress import CancelFn, Progress, ProgressFn, check_cancel
from genai.synth.data import LabelledImages

FID_NOTE = ("local FID/KID: features of a CNN trained on your real data, not Inception; "
            "compare runs on the same data only, never with published FID")


class SmallCNN(nn.Module):
    """The fixed classifier of the utility benchmark and the feature extractor of the gates."""

    def __init__(self, channels: int, classes: int, width: int = 16, features: int = 128) -> None:
        super().__init__()
        self.body = nn.Sequential(
            nn.Conv2d(channels, width, 3, padding=1), nn.BatchNorm2d(width), nn.ReLU(),
            nn.Conv2d(width, width, 3, padding=1), nn.BatchNorm2d(width), nn.ReLU(), nn.MaxPool2d(2),
            nn.Conv2d(width, 2 * width, 3, padding=1), nn.BatchNorm2d(2 * width), nn.ReLU(),
            nn.Conv2d(2 * width, 2 * width, 3, padding=1), nn.BatchNorm2d(2 * width), nn.ReLU(), nn.MaxPool2d(2),
            nn.AdaptiveAvgPool2d(2), nn.Flatten(), nn.Linear(8 * width, features), nn.ReLU(), nn.Dropout(0.3))
        self.head = nn.Linear(features, classes)

    def features(self, x: torch.Tensor) -> torch.Tensor:
        return self.body(x)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.body(x))


def to_tensor(images: np.ndarray) -> torch.Tensor:
    return torch.from_numpy(np.require(images, requirements=["C", "W"])).permute(0, 3, 1, 2).float() / 255.0


def train_classifier(images: np.ndarray, labels: np.ndarray, classes: int, *, steps: int = 1500,
                     batch_size: int = 64, seed: int = 0, augment=None, weights: np.ndarray | None = None,
                     progress: ProgressFn | None = None, cancel: CancelFn | None = None) -> SmallCNN:
    """Train ``SmallCNN`` for a fixed number of steps (the same budget whatever the set size).

    ``augment(x: float NCHW, generator) -> x`` is applied to every batch; ``weights`` are
    sampling probabilities per image (to mix real and synthetic images at a set ratio).
    """
    torch.manual_seed(seed)
    model = SmallCNN(images.shape[-1], classes)
    opt = torch.optim.AdamW(model.parameters(), lr=2e-3, weight_decay=5e-4)
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=2e-3, total_steps=steps)
    x_all, y_all = to_tensor(images), torch.from_numpy(np.asarray(labels, dtype=np.int64))
    p = None if weights is None else torch.from_numpy(np.asarray(weights, dtype=np.float64))
    g = torch.Generator().manual_seed(seed)
    model.train()
    for step in range(steps):
        check_cancel(cancel)
        idx = (torch.multinomial(p, batch_size, replacement=True, generator=g) if p is not None
               else torch.randint(len(x_all), (batch_size,), generator=g))
        x = x_all[idx]
        if augment is not None:
            x = augment(x, g)
        loss = F.cross_entropy(model(x), y_all[idx], label_smoothing=0.05)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        sched.step()
        if progress:
            progress(Progress(step + 1, steps, "classifier"))
    return model.eval()


@torch.inference_mode()
def predict(model: SmallCNN, images: np.ndarray, batch_size: int = 1000) -> tuple[np.ndarray, np.ndarray]:
    """(predicted labels, features) for uint8 NHWC images."""
    preds, feats = [], []
    for i in range(0, len(images), batch_size):
        f = model.features(to_tensor(images[i:i + batch_size]))
        feats.append(f.numpy())
        preds.append(model.head(f).argmax(1).numpy())
    return np.concatenate(preds), np.concatenate(feats).astype(np.float64)


def random_shift(x: torch.Tensor, s: int, g: torch.Generator) -> torch.Tensor:
    """Each image moved by up to ``s`` pixels each way (edge pixels repeated: pad and crop)."""
    n, c, h, w = x.shape
    padded = F.pad(x, (s, s, s, s), mode="replicate")
    rows = torch.randint(2 * s + 1, (n, 1), generator=g) + torch.arange(h)
    cols = torch.randint(2 * s + 1, (n, 1), generator=g) + torch.arange(w)
    return padded[torch.arange(n)[:, None, None, None], torch.arange(c)[None, :, None, None],
                  rows[:, None, :, None], cols[:, None, None, :]]


def classical_augment(x: torch.Tensor, g: torch.Generator) -> torch.Tensor:
    """The classical baseline: random 2-px shifts (pad and crop), horizontal flips, ±10% contrast."""
    n = len(x)
    out = random_shift(x, 2, g)
    flip = torch.rand(n, generator=g) < 0.5
    out = torch.where(flip[:, None, None, None], out.flip(-1), out)
    contrast = 1 + (torch.rand(n, generator=g) - 0.5) * 0.2
    mean = out.mean(dim=(1, 2, 3), keepdim=True)
    return ((out - mean) * contrast[:, None, None, None] + mean).clamp(0, 1)


class StrongAugment:
    """Tuned classical augmentation: torchvision v2 TrivialAugmentWide (Müller & Hutter 2021: one
    random op of random strength per image, no settings to tune) on each image, then random shifts
    of up to ``shift`` pixels and, where a mirror keeps the label, horizontal flips. Picklable, so
    a classifier's training can run in another process."""

    def __init__(self, *, hflip: bool, shift: int = 2) -> None:
        self.hflip, self.shift = hflip, shift

    def __call__(self, x: torch.Tensor, g: torch.Generator) -> torch.Tensor:
        from torchvision.transforms import v2

        ta = v2.TrivialAugmentWide()  # draws from torch's global generator, seeded by train_classifier
        u8 = (x * 255).round().to(torch.uint8)
        x = torch.stack([ta(im) for im in u8]).float() / 255
        x = random_shift(x, self.shift, g)
        if self.hflip:
            flip = torch.rand(len(x), generator=g) < 0.5
            x = torch.where(flip[:, None, None, None], x.flip(-1), x)
        return x


# --------------------------------------------------------------------------- the gates


def frechet_distance(a: np.ndarray, b: np.ndarray) -> float:
    """||mu_a - mu_b||^2 + Tr(S_a + S_b - 2 (S_a S_b)^(1/2)) of two feature sets."""
    from scipy import linalg

    mu_a, mu_b = a.mean(0), b.mean(0)
    s_a, s_b = np.cov(a, rowvar=False), np.cov(b, rowvar=False)
    with warnings.catch_warnings():  # fewer images than features make the product singular: expected
        warnings.simplefilter("ignore", linalg.LinAlgWarning)
        covmean = linalg.sqrtm(s_a @ s_b)
        if not np.isfinite(covmean).all():  # regularise, as pytorch-fid does
            eps = np.eye(len(s_a)) * 1e-6
            covmean = linalg.sqrtm((s_a + eps) @ (s_b + eps))
    return float(((mu_a - mu_b) ** 2).sum() + np.trace(s_a) + np.trace(s_b) - 2 * np.trace(covmean.real))


def kernel_inception_distance(a: np.ndarray, b: np.ndarray, *, subsets: int = 20, subset_size: int = 500,
                              seed: int = 0) -> tuple[float, float]:
    """Unbiased MMD^2 with the cubic polynomial kernel (Binkowski et al. 2018): mean and std over subsets."""
    rng = np.random.default_rng(seed)
    m = min(subset_size, len(a), len(b))
    d = a.shape[1]
    values = []
    for _ in range(subsets):
        x, y = a[rng.choice(len(a), m, replace=False)], b[rng.choice(len(b), m, replace=False)]
        kxx, kyy, kxy = (x @ x.T / d + 1) ** 3, (y @ y.T / d + 1) ** 3, (x @ y.T / d + 1) ** 3
        values.append((kxx.sum() - np.trace(kxx)) / (m * (m - 1)) + (kyy.sum() - np.trace(kyy)) / (m * (m - 1))
                      - 2 * kxy.mean())
    return float(np.mean(values)), float(np.std(values))


def _distances(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    ta, tb = torch.from_numpy(a), torch.from_numpy(b)
    return torch.cdist(ta, tb).numpy()


def precision_recall(real: np.ndarray, fake: np.ndarray, k: int = 3) -> tuple[float, float]:
    """Improved precision and recall (Kynkäänniemi et al. 2019) with k-NN balls."""
    def radii(x: np.ndarray) -> np.ndarray:
        d = _distances(x, x)
        return np.sort(d, axis=1)[:, min(k, len(x) - 1)]

    r_real, r_fake = radii(real), radii(fake)
    d = _distances(fake, real)  # fake x real
    precision = float((d <= r_real[None, :]).any(axis=1).mean())
    recall = float((d.T <= r_fake[None, :]).any(axis=1).mean())
    return precision, recall


def memorisation(samples: np.ndarray, training: np.ndarray, *, ratio: float = 1 / 3) -> np.ndarray:
    """Per sample, nearest / second-nearest training distance (pixels in [0, 1]); < ratio is a near-copy.

    Gu et al. 2023, "On memorization in diffusion models": a sample is memorised when its
    nearest training image is much closer than any other. Returns the ratios.
    """
    s = samples.reshape(len(samples), -1).astype(np.float32) / 255.0
    t = training.reshape(len(training), -1).astype(np.float32) / 255.0
    ratios = []
    for i in range(0, len(s), 512):
        d = torch.cdist(torch.from_numpy(s[i:i + 512]), torch.from_numpy(t))
        two = d.topk(2, largest=False).values
        ratios.append((two[:, 0] / two[:, 1].clamp_min(1e-12)).numpy())
    return np.concatenate(ratios)


@dataclass(frozen=True)
class GateThresholds:
    memorised_ratio: float = 1 / 3
    max_memorised_rate: float = 0.01
    max_imbalance: float = 1.5  # largest class / smallest class
    # share of samples the real-data classifier gives their own label; it is bounded by that
    # classifier's accuracy, so the bar is low: below it, most samples do not show their class
    min_label_fidelity: float = 0.5


def evaluate(real: LabelledImages, synth: LabelledImages, *, reference: LabelledImages | None = None,
             pool: np.ndarray | None = None, steps: int = 800, seed: int = 0,
             thresholds: GateThresholds = GateThresholds(),
             progress: ProgressFn | None = None, cancel: CancelFn | None = None) -> dict:
    """Every gate for ``synth`` against ``real`` (the training data: memorisation is checked against it,
    and against the unlabelled ``pool`` images too when the generator learnt from one).

    ``reference`` (default: ``real``) trains the feature extractor. The result is JSON-ready and
    says which gates pass.
    """
    from genai.errors import InputError

    if sorted(synth.classes) != sorted(real.classes):
        raise InputError(f"the synthetic set's classes ({', '.join(synth.classes)}) are not the real set's "
                         f"({', '.join(real.classes)})")
    synth = synth.relabel(real.classes)
    if min(len(real), len(synth)) < 2:
        raise InputError("each set needs at least two images")
    if synth.images.shape[1:] != real.images.shape[1:]:
        raise InputError(f"synthetic images are {synth.images.shape[1:]}, real ones {real.images.shape[1:]} (HxWxC)")
    reference = reference or real
    net = train_classifier(reference.images, reference.labels, len(real.classes), steps=steps, seed=seed,
                           progress=progress, cancel=cancel)
    _, f_real = predict(net, real.images)
    pred, f_synth = predict(net, synth.images)
    precision, recall = precision_recall(f_real, f_synth)
    kid, kid_std = kernel_inception_distance(f_real, f_synth)
    ratios = memorisation(synth.images, real.images)
    flagged = [synth.files[i] for i in np.flatnonzero(ratios < thresholds.memorised_ratio)]
    counts = synth.counts()
    nonzero = [n for n in counts.values() if n]
    imbalance = max(nonzero) / min(nonzero) if len(nonzero) == len(counts) else None  # None: a class is missing
    few = min(len(real), len(synth)) < 2 * f_real.shape[1]
    result = {
        "note": FID_NOTE + (f"; with fewer than {2 * f_real.shape[1]} images per set FID/KID are noisy" if few else ""),
        "real_images": len(real), "synthetic_images": len(synth),
        "fid": frechet_distance(f_real, f_synth), "kid": kid, "kid_std": kid_std,
        "precision": precision, "recall": recall,
        "label_fidelity": float((pred == synth.labels).mean()),
        "memorised_rate": float(len(flagged) / max(len(synth), 1)), "memorised": flagged[:100],
        "class_counts": counts, "imbalance": imbalance,
    }
    if pool is not None and len(pool) >= 2:
        near = memorisation(synth.images, pool) < thresholds.memorised_ratio
        result["memorised_rate_pool"] = float(near.mean())
        result["memorised_pool"] = [synth.files[i] for i in np.flatnonzero(near)][:100]
    result["gates"] = {"memorisation": max(result["memorised_rate"], result.get("memorised_rate_pool", 0.0))
                       <= thresholds.max_memorised_rate,
                       "class_balance": imbalance is not None and imbalance <= thresholds.max_imbalance,
                       "label_fidelity": result["label_fidelity"] >= thresholds.min_label_fidelity}
    return result
