"""Training a class-conditional diffusion generator (see genai.synth.diffusion for the model).

``train`` follows diffusers' class-conditional examples: ``DDPMScheduler`` noise, epsilon
prediction, AdamW with a cosine schedule and warm-up, label dropout for classifier-free
guidance and an EMA of the weights. The run folder holds ``run.json``, ``checkpoint.pt``
(every ``checkpoint_every`` steps and on cancel: rerunning resumes there, bit for bit), and
when finished ``generator.safetensors`` + ``model.json``, ``MODEL_CARD.md`` and ``loss.png``.

With an unlabelled pool (``genai.synth.pool``), the generator learns from both sets: a
classifier trained on the labelled set pseudo-labels the pool (``genai.synth.pseudo``, its
threshold chosen by cross-validation); every batch draws ``labelled_share`` of its images from
the labelled set and the rest from the pool, where a confident pseudo-label conditions the
image and any other pool image is denoised with the null class (unconditional). The run also
keeps ``pseudo.json`` (the chosen threshold, coverage and estimated accuracy), ``pseudo.npz``
(the labels) and ``classifier.safetensors`` (what ``sample`` filters with).
"""

from __future__ import annotations

import json
import logging
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from genai.errors import Cancelled, InputError
from genai.paths import atomic_path
from genai.plots import plot_curve
from genai.progress import CancelFn, Progress, ProgressFn, check_cancel
from genai.registry import sha256_file
from genai.synth.data import LabelledImages
from genai.synth.diffusion import (
    CHECKPOINT,
    MODEL_JSON,
    RUN_JSON,
    WEIGHTS,
    TrainConfig,
    build_unet,
    padded_size,
    read_json,
    scheduler_config,
    to_model_space,
    unet_config,
)
from genai.synth.pool import Pool
from genai.synth.pseudo import CLASSIFIER, PseudoConfig, PseudoLabels, pseudo_label

log = logging.getLogger("genai.synth")
PSEUDO_JSON, PSEUDO_NPZ = "pseudo.json", "pseudo.npz"


@dataclass(frozen=True)
class PoolConfig:
    """How a generator learns from an unlabelled pool (see the module's doc)."""

    labelled_share: float = 0.25  # of every batch; the rest comes from the pool
    pseudo: PseudoConfig = PseudoConfig()


@dataclass
class _State:
    model: torch.nn.Module
    ema: object
    optimizer: torch.optim.Optimizer
    lr: torch.optim.lr_scheduler.LRScheduler
    step: int = 0
    losses: list[float] = field(default_factory=list)


def _run_settings(data: LabelledImages, cfg: TrainConfig, pool: Pool | None, pool_cfg: PoolConfig) -> dict:
    settings = {"config": {**asdict(cfg), "channels": list(cfg.channels)}, "data_sha256": data.sha256,
                "classes": data.classes, "size": list(data.size), "channels": data.channels, "images": len(data)}
    if pool is not None:  # absent without a pool: runs made before pools existed resume as they were
        settings["pool"] = {"sha256": pool.info.sha256, "images": len(pool), **asdict(pool_cfg)}
    return settings


def _pseudo_labels(run: Path, data: LabelledImages, pool: Pool, cfg: PoolConfig, progress, cancel) -> PseudoLabels:
    """The pool's pseudo-labels, made once per run (kept in the run: a resume reuses them)."""
    from safetensors.torch import save_file

    if (run / PSEUDO_JSON).exists() and (run / PSEUDO_NPZ).exists() and (run / CLASSIFIER).exists():
        meta = read_json(run / PSEUDO_JSON)
        with np.load(run / PSEUDO_NPZ) as z:
            return PseudoLabels(z["labels"], z["confidence"], meta["threshold"], meta["chosen_by"],
                                meta["estimated_accuracy"], meta["cv"])
    labels, model = pseudo_label(data, pool.images, cfg.pseudo, progress=progress, cancel=cancel)
    with atomic_path(run / CLASSIFIER) as tmp:
        save_file({k: v.contiguous() for k, v in model.state_dict().items()}, str(tmp))
    with atomic_path(run / PSEUDO_NPZ) as tmp, open(tmp, "wb") as f:
        np.savez(f, labels=labels.labels, confidence=labels.confidence)
    with atomic_path(run / PSEUDO_JSON) as tmp:
        tmp.write_text(json.dumps(labels.summary(), indent=2))
    return labels


def _save_checkpoint(run: Path, st: _State) -> None:
    with atomic_path(run / CHECKPOINT) as tmp:
        torch.save({"model": st.model.state_dict(), "ema": st.ema.state_dict(), "optimizer": st.optimizer.state_dict(),
                    "lr": st.lr.state_dict(), "step": st.step, "losses": st.losses}, tmp)


def train(data: LabelledImages, run: str | Path, cfg: TrainConfig = TrainConfig(), *, pool: Pool | None = None,
          pool_cfg: PoolConfig = PoolConfig(), progress: ProgressFn | None = None, cancel: CancelFn | None = None,
          overwrite: bool = False) -> Path:
    """Train (or resume) a generator on ``data`` (and the unlabelled ``pool``) into the folder
    ``run``; returns its weights path.

    A folder holding a run with other settings or other data is refused unless ``overwrite``.
    """
    from diffusers import DDPMScheduler
    from diffusers.optimization import get_cosine_schedule_with_warmup
    from diffusers.training_utils import EMAModel

    if len(data.classes) < 2:
        raise InputError("a class-conditional generator needs at least two classes")
    run = Path(run)
    if run.exists() and not run.is_dir():
        raise InputError(f"{run}: exists and is not a folder")
    if pool is not None and (tuple(pool.info.size) != data.size or pool.info.channels != data.channels):
        raise InputError(f"{pool.info.source}: pool images are {pool.info.size}x{pool.info.channels}, the labelled "
                         f"ones {list(data.size)}x{data.channels}")
    if not 0 < pool_cfg.labelled_share <= 1:
        raise InputError(f"the labelled share of a batch must be in (0, 1], got {pool_cfg.labelled_share}")
    settings = _run_settings(data, cfg, pool, pool_cfg)
    if (run / RUN_JSON).exists() and not overwrite:
        old = read_json(run / RUN_JSON)
        if old != settings:
            changed = sorted(k for k in settings if old.get(k) != settings[k])
            raise InputError(f"{run}: holds a run with other {', '.join(changed)}; "
                             "use another --out, or --overwrite to start again")
        if (run / WEIGHTS).exists():
            log.info("%s: already trained (%d steps)", run, cfg.steps)
            return run / WEIGHTS
    elif overwrite:
        for name in (CHECKPOINT, WEIGHTS, MODEL_JSON, "MODEL_CARD.md", "loss.png", PSEUDO_JSON, PSEUDO_NPZ, CLASSIFIER):
            (run / name).unlink(missing_ok=True)
    run.mkdir(parents=True, exist_ok=True)
    with atomic_path(run / RUN_JSON) as tmp:
        tmp.write_text(json.dumps(settings, indent=2))

    side = padded_size(max(data.size), len(cfg.channels))
    ucfg = unet_config(data.channels, side, len(data.classes), cfg)
    torch.manual_seed(cfg.seed)  # the initial weights
    model = build_unet(ucfg).to(memory_format=torch.channels_last)
    optimizer = torch.optim.AdamW(model.parameters(), lr=cfg.learning_rate, weight_decay=1e-4)
    st = _State(model, EMAModel(model.parameters(), decay=cfg.ema_decay, use_ema_warmup=True, power=3 / 4),
                optimizer, get_cosine_schedule_with_warmup(optimizer, cfg.warmup_steps, cfg.steps))
    if (run / CHECKPOINT).exists():
        ck = torch.load(run / CHECKPOINT, weights_only=True)
        model.load_state_dict(ck["model"])
        st.ema.load_state_dict(ck["ema"])
        optimizer.load_state_dict(ck["optimizer"])
        st.lr.load_state_dict(ck["lr"])
        st.step, st.losses = ck["step"], list(ck["losses"])
        log.info("%s: resuming at step %d of %d", run, st.step, cfg.steps)

    noise_sched = DDPMScheduler(**scheduler_config(cfg))
    x_all = to_model_space(data.images, side)
    y_all = torch.from_numpy(data.labels)
    null = len(data.classes)
    pseudo = None if pool is None else _pseudo_labels(run, data, pool, pool_cfg, progress, cancel)
    n_lab = cfg.batch_size if pool is None else max(1, round(cfg.batch_size * pool_cfg.labelled_share))
    started = time.monotonic()
    model.train()
    try:
        while st.step < cfg.steps:
            check_cancel(cancel)
            g = torch.Generator().manual_seed(cfg.seed * 1_000_003 + st.step)
            idx = torch.randint(len(x_all), (n_lab,), generator=g)
            x0, y = x_all[idx], y_all[idx].clone()
            if pool is not None and n_lab < cfg.batch_size:
                x0, y = _with_pool(x0, y, pool, pseudo, cfg.batch_size - n_lab, null, side, g)
            if cfg.hflip:
                flip = torch.rand(len(x0), generator=g) < 0.5
                x0 = torch.where(flip[:, None, None, None], x0.flip(-1), x0)
            y[torch.rand(len(x0), generator=g) < cfg.label_dropout] = null
            noise = torch.randn(x0.shape, generator=g)
            t = torch.randint(cfg.train_timesteps, (len(x0),), generator=g)
            xt = noise_sched.add_noise(x0, noise, t).contiguous(memory_format=torch.channels_last)
            loss = F.mse_loss(model(xt, t, class_labels=y).sample, noise)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
            optimizer.step()
            st.lr.step()
            st.ema.step(model.parameters())
            st.losses.append(loss.item())
            st.step += 1
            if progress:
                progress(Progress(st.step, cfg.steps, "train"))
            if st.step % cfg.checkpoint_every == 0 or st.step == cfg.steps:
                _save_checkpoint(run, st)
                log.debug("step %d: loss %.4f", st.step, float(np.mean(st.losses[-cfg.checkpoint_every:])))
    except Cancelled:  # checked between steps: the state is whole, save it (an exception mid-step keeps
        _save_checkpoint(run, st)  # the last periodic checkpoint instead, which is)
        raise

    st.ema.copy_to(model.parameters())  # sample from the EMA weights
    _write_generator(run, model, ucfg, cfg, data, pool)
    _write_card(run, data, cfg, st.losses, seconds=time.monotonic() - started, pool=pool)
    return run / WEIGHTS


def _with_pool(x0: torch.Tensor, y: torch.Tensor, pool: Pool, pseudo: PseudoLabels, n: int, null: int, side: int,
               g: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
    """``n`` pool images appended to the batch: the pseudo-label where confident, else the null class.
    Only these ``n`` images are read (sorted, from the memmap) and made float."""
    pick = torch.randint(len(pool), (n,), generator=g).sort().values.numpy()
    labels = torch.from_numpy(pseudo.labels[pick])
    labels = torch.where(labels >= 0, labels, torch.full_like(labels, null))
    return (torch.cat([x0, to_model_space(np.asarray(pool.images[pick]), side)]), torch.cat([y, labels]))


def _write_generator(run: Path, model: torch.nn.Module, ucfg: dict, cfg: TrainConfig, data: LabelledImages,
                     pool: Pool | None) -> None:
    from safetensors.torch import save_file

    with atomic_path(run / WEIGHTS) as tmp:
        save_file({k: v.contiguous() for k, v in model.state_dict().items()}, str(tmp))
    meta = {"unet": ucfg, "scheduler": scheduler_config(cfg), "classes": data.classes, "size": list(data.size),
            "channels": data.channels, "weights_sha256": sha256_file(run / WEIGHTS)}
    if pool is not None:  # sampling filters with the pseudo-labeller (see genai.synth.diffusion.sample_folder)
        meta["classifier"] = {"file": CLASSIFIER, "sha256": sha256_file(run / CLASSIFIER),
                              "pseudo": read_json(run / PSEUDO_JSON)}
        meta["pool"] = {"images": len(pool), "sha256": pool.info.sha256}
    with atomic_path(run / MODEL_JSON) as tmp:
        tmp.write_text(json.dumps(meta, indent=2))


def _pool_rows(pool: Pool | None, meta: dict) -> str:
    if pool is None:
        return ""
    i, ps = pool.info, meta["classifier"]["pseudo"]
    acc = "not estimated" if ps["estimated_accuracy"] is None else f"{100 * ps['estimated_accuracy']:.1f}%"
    skipped = f"{i.not_images} not images, {i.unreadable} unreadable" if i.files != i.images else "none"
    return f"""| unlabelled pool | {i.images} images from `{i.source}` (sha256 `{i.sha256}`) |
| pool files skipped | {skipped}; {i.labelled_copies} copies of labelled images left out; {i.resized} resized |
| pseudo-label threshold | {ps['threshold']} ({ps['chosen_by']}) |
| pseudo-label coverage | {100 * ps['coverage']:.1f}% of the pool ({ps['confident']} images) |
| estimated pseudo-label accuracy | {acc} (cross-validated on the labelled set) |
"""


def _write_card(run: Path, data: LabelledImages, cfg: TrainConfig, losses: list[float], *, seconds: float,
                pool: Pool | None = None) -> None:
    meta = read_json(run / MODEL_JSON)
    plot_curve(losses, run / "loss.png", "training loss (noise-prediction MSE)")
    tail = float(np.mean(losses[-max(1, len(losses) // 20):]))
    n_params = sum(int(np.prod(s)) for s in _param_shapes(meta["unet"]))
    counts = ", ".join(f"{c}: {n}" for c, n in data.counts().items())
    text = f"""# Generator card: {run.name}

A class-conditional diffusion model (diffusers `UNet2DModel`, {n_params / 1e6:.2f}M parameters) trained by
`genai synth train` on a small labelled set{' and an unlabelled pool' if pool is not None else ''}. It makes images of the classes below, for use as extra
training data; check its samples with `genai synth evaluate` before training on them.

| | |
|---|---|
| training data sha256 | `{data.sha256}` |
| images | {len(data)} ({counts}) |
| image size | {data.size[0]}x{data.size[1]}, {data.channels} channel(s), padded to {meta['unet']['sample_size']} |
| classes | {', '.join(data.classes)} |
| steps | {cfg.steps} (batch {cfg.batch_size}, AdamW lr {cfg.learning_rate}, cosine, {cfg.warmup_steps} warm-up) |
| label dropout (for guidance) | {cfg.label_dropout} |
| EMA | decay {cfg.ema_decay} with warm-up |
| horizontal flips | {'yes' if cfg.hflip else 'no'} |
| seed | {cfg.seed} |
| final loss (mean of the last 5%) | {tail:.4f} |
| training time | {seconds:.0f} s in this session |
| weights sha256 | `{meta['weights_sha256']}` |
{_pool_rows(pool, meta)}
![loss](loss.png)

Limitations: trained on {len(data)} images, it reproduces their style and can memorise them; samples
are only as varied as the data. The memorisation check in `genai synth evaluate` flags near-copies.
"""
    with atomic_path(run / "MODEL_CARD.md") as tmp:
        tmp.write_text(text)


def _param_shapes(ucfg: dict):
    with torch.device("meta"):
        model = build_unet(ucfg)
    return [p.shape for p in model.parameters()]
