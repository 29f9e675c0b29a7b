"""A class-conditional diffusion generator trained on the user's small labelled set.

Training follows diffusers' unconditional/class-conditional examples: a ``UNet2DModel`` with
``num_class_embeds = classes + 1`` (the extra label is "no label", used with probability
``label_dropout`` so one network learns both the conditional and the unconditional model
for classifier-free guidance), ``DDPMScheduler`` noise, epsilon prediction, AdamW with a
cosine schedule and warm-up, and an EMA of the weights with warm-up (the EMA weights are
the ones sampled from; training is genai.synth.training). Sampling uses DPM-Solver++ (20-50 steps); image-to-image variants
noise a real image to strength ``t`` and denoise it with its own label (DDIM).

A run folder holds ``run.json`` (settings and the data's sha256), ``checkpoint.pt`` (written
every ``checkpoint_every`` steps and on Ctrl-C/cancel: rerunning the same command resumes
there, bit for bit: every step draws its batch and noise from a generator seeded by
(seed, step)), and when finished ``generator.safetensors`` + ``model.json``, ``MODEL_CARD.md``
and ``loss.png``.
"""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from genai.errors import InputError
from genai.paths import atomic_path
from genai.progress import CancelFn, Progress, ProgressFn, check_cancel
from genai.registry import sha256_file
from genai.synth.data import LabelledImages

log = logging.getLogger("genai.synth")

CHECKPOINT = "checkpoint.pt"
WEIGHTS = "generator.safetensors"
MODEL_JSON = "model.json"
RUN_JSON = "run.json"


@dataclass(frozen=True)
class TrainConfig:
    steps: int = 2000
    batch_size: int = 64
    learning_rate: float = 5e-4
    warmup_steps: int = 100
    label_dropout: float = 0.1
    ema_decay: float = 0.999
    hflip: bool = False  # only where a mirrored image keeps its label (clothes yes, digits no)
    seed: int = 0
    checkpoint_every: int = 100
    channels: tuple[int, ...] = (16, 32, 64)
    layers_per_block: int = 1
    train_timesteps: int = 1000


def padded_size(size: int, levels: int) -> int:
    """The network's input side: ``size`` rounded up to a multiple of 2**levels and of 8 (28 -> 32)."""
    m = 2 ** max(levels, 3)
    return -(-size // m) * m


def build_unet(config: dict):
    from diffusers import UNet2DModel

    return UNet2DModel(**config)


def unet_config(data_channels: int, side: int, num_classes: int, cfg: TrainConfig) -> dict:
    n = len(cfg.channels)
    return dict(sample_size=side, in_channels=data_channels, out_channels=data_channels,
                block_out_channels=list(cfg.channels), layers_per_block=cfg.layers_per_block,
                down_block_types=["DownBlock2D"] * n, up_block_types=["UpBlock2D"] * n,
                num_class_embeds=num_classes + 1, norm_num_groups=min(8, cfg.channels[0]))


def scheduler_config(cfg: TrainConfig) -> dict:
    return dict(num_train_timesteps=cfg.train_timesteps, beta_schedule="squaredcos_cap_v2",
                prediction_type="epsilon")


def to_model_space(images: np.ndarray, side: int) -> torch.Tensor:
    """uint8 NHWC -> float NCHW in [-1, 1], edge-padded to ``side`` (cropped back after sampling)."""
    x = torch.from_numpy(np.ascontiguousarray(images)).permute(0, 3, 1, 2).float() / 127.5 - 1.0
    h, w = x.shape[-2:]
    top, left = (side - h) // 2, (side - w) // 2
    if (h, w) != (side, side):
        x = F.pad(x, (left, side - w - left, top, side - h - top), mode="replicate")
    return x


def from_model_space(x: torch.Tensor, size: tuple[int, int]) -> np.ndarray:
    h, w = size
    side = x.shape[-1]
    top, left = (side - h) // 2, (side - w) // 2
    x = x[..., top:top + h, left:left + w]
    return ((x.clamp(-1, 1) + 1) * 127.5).round().to(torch.uint8).permute(0, 2, 3, 1).cpu().numpy()


def read_json(path: Path) -> dict:
    try:
        return json.loads(Path(path).read_text())
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise InputError(f"{path}: cannot be read ({exc})") from None




# --------------------------------------------------------------------------- sampling

# The samplers a generator can use, chosen by name (diffusers schedulers built ``from_config``
# of the training schedule). DPM-Solver++: dynamic thresholding (Imagen) keeps each step's
# clean-image estimate in range, and the clipped lambda skips the cosine schedule's last
# steps, where alpha ~ 0 amplifies any error of the network; without both, a small
# generator's samples come out as noise. DDIM clips its estimate itself (clip_sample).
SAMPLERS = {
    "dpmsolver++": ("DPMSolverMultistepScheduler", {"thresholding": True, "sample_max_value": 1.0,
                                                    "lambda_min_clipped": -5.1}),
    "ddim": ("DDIMScheduler", {"clip_sample": True}),
}


def make_sampler(name: str, training_config: dict):
    import diffusers

    if name not in SAMPLERS:
        raise InputError(f"unknown sampler {name!r} (one of {', '.join(SAMPLERS)})")
    cls, options = SAMPLERS[name]
    return getattr(diffusers, cls).from_config({**training_config, **options})


@dataclass(frozen=True)
class GeneratorConfig:
    run: Path
    device: str = "cpu"


class SynthGenerator:
    """A trained generator: holds the weights only; every call builds its own scheduler."""

    def __init__(self, *, config: GeneratorConfig) -> None:
        from safetensors.torch import load_file

        self.run = Path(config.run)
        if not (self.run / WEIGHTS).exists() or not (self.run / MODEL_JSON).exists():
            what = "is not finished (rerun genai synth train to resume)" if (self.run / CHECKPOINT).exists() \
                else "is not a trained generator (no generator.safetensors)"
            raise InputError(f"{self.run}: {what}")
        self.meta = read_json(self.run / MODEL_JSON)
        digest = sha256_file(self.run / WEIGHTS)
        if digest != self.meta.get("weights_sha256"):
            raise InputError(f"{self.run / WEIGHTS}: sha256 {digest[:12]}... does not match model.json")
        self.classes: list[str] = self.meta["classes"]
        self.size: tuple[int, int] = tuple(self.meta["size"])
        self.device = torch.device(config.device)
        self.model = build_unet(self.meta["unet"])
        self.model.load_state_dict(load_file(self.run / WEIGHTS))
        self.model.to(self.device, memory_format=torch.channels_last).eval()
        self.weights_sha256 = digest

    @property
    def side(self) -> int:
        return int(self.meta["unet"]["sample_size"])

    def _eps(self, x: torch.Tensor, t, y: torch.Tensor, guidance: float) -> torch.Tensor:
        """Classifier-free guidance: eps_u + w (eps_c - eps_u), both halves in one batch."""
        x = x.contiguous(memory_format=torch.channels_last)
        if guidance == 1.0:
            return self.model(x, t, class_labels=y).sample
        null = torch.full_like(y, len(self.classes))
        both = self.model(torch.cat([x, x]), t, class_labels=torch.cat([y, null])).sample
        cond, uncond = both.chunk(2)
        return uncond + guidance * (cond - uncond)

    def _labels(self, labels) -> torch.Tensor:
        y = torch.as_tensor(np.asarray(labels), dtype=torch.long)
        if len(y) and (int(y.min()) < 0 or int(y.max()) >= len(self.classes)):
            raise InputError(f"labels must be in 0..{len(self.classes) - 1}")
        return y

    def _noise(self, seeds) -> torch.Tensor:
        c = int(self.meta["channels"])
        return torch.stack([torch.randn((c, self.side, self.side), generator=torch.Generator().manual_seed(int(s)))
                            for s in seeds]).to(self.device)

    def _denoise(self, x: torch.Tensor, y: torch.Tensor, sched, timesteps, guidance: float, cancel) -> np.ndarray:
        for t in timesteps:
            check_cancel(cancel)
            x = sched.step(self._eps(x, t, y, guidance), t, x).prev_sample
        return from_model_space(x, self.size)

    @torch.inference_mode()
    def sample(self, labels, *, seeds, guidance: float = 2.0, steps: int = 25, sampler: str = "dpmsolver++",
               batch_size: int = 128, progress: ProgressFn | None = None, cancel: CancelFn | None = None) -> np.ndarray:
        """One image per label, each from its own seed (so any subset can be remade exactly)."""
        y_all = self._labels(labels)
        if len(seeds) != len(y_all):
            raise ValueError("one seed per label")
        out = []
        for start in range(0, len(y_all), batch_size):
            sched = make_sampler(sampler, self.meta["scheduler"])
            sched.set_timesteps(steps)
            x = self._noise(seeds[start:start + batch_size]) * sched.init_noise_sigma
            out.append(self._denoise(x, y_all[start:start + batch_size].to(self.device), sched, sched.timesteps,
                                     guidance, cancel))
            if progress:
                progress(Progress(min(start + batch_size, len(y_all)), len(y_all), "sample"))
        return np.concatenate(out) if out else np.zeros((0, *self.size, self.meta["channels"]), np.uint8)

    @torch.inference_mode()
    def variants(self, images: np.ndarray, labels, *, seeds, strength: float = 0.5, guidance: float = 2.0,
                 steps: int = 50, batch_size: int = 128, progress: ProgressFn | None = None,
                 cancel: CancelFn | None = None) -> np.ndarray:
        """Image-to-image: noise each real image to ``strength`` (0..1), denoise it with its label (DDIM)."""
        if not 0 < strength <= 1:
            raise InputError(f"--strength must be in (0, 1], got {strength}")
        if tuple(images.shape[1:3]) != self.size or images.shape[-1] != self.meta["channels"]:
            raise InputError(f"images are {images.shape[1]}x{images.shape[2]}x{images.shape[-1]}, the generator makes "
                             f"{self.size[0]}x{self.size[1]}x{self.meta['channels']}")
        y_all = self._labels(labels)
        out = []
        for start in range(0, len(y_all), batch_size):
            sched = make_sampler("ddim", self.meta["scheduler"])
            sched.set_timesteps(steps)
            keep = max(1, min(steps, round(steps * strength)))
            timesteps = sched.timesteps[steps - keep:]
            x0 = to_model_space(images[start:start + batch_size], self.side).to(self.device)
            x = sched.add_noise(x0, self._noise(seeds[start:start + batch_size]), timesteps[:1])
            out.append(self._denoise(x, y_all[start:start + batch_size].to(self.device), sched, timesteps,
                                     guidance, cancel))
            if progress:
                progress(Progress(min(start + batch_size, len(y_all)), len(y_all), "variants"))
        return np.concatenate(out)


# --------------------------------------------------------------------------- datasets


@dataclass(frozen=True)
class SampleConfig:
    per_class: int | dict[str, int] = 100
    guidance: float = 2.0
    steps: int = 25
    sampler: str = "dpmsolver++"
    seed: int = 0
    batch_size: int = 128
    filter: bool | None = None  # drop samples the run's classifier does not give their label (None: if it has one)
    max_draws: float = 4.0  # candidates per image asked, at most, when filtering
    soft_labels: bool = False  # with the filter: the classifier's probabilities per image in dataset.json


class _Work:
    """A resumable output folder: work goes into ``.OUT.genai-work`` beside ``out`` with the
    parameters that fix every image (``params.json``); a rerun with the same parameters goes on
    there, other parameters are refused (or, with ``overwrite``, start again). ``out`` appears
    (or replaces the old one, with ``overwrite``) only when complete."""

    def __init__(self, out: Path, params: dict, overwrite: bool) -> None:
        import shutil

        self.out, self.dir = Path(out), Path(out).parent / f".{Path(out).name}.genai-work"
        if self.out.exists() and not overwrite:
            raise InputError(f"{self.out}: exists (use --overwrite to replace it)")
        stamp = self.dir / "params.json"
        if self.dir.exists() and (overwrite or not stamp.exists() or read_json(stamp) != params):
            if not overwrite:
                raise InputError(f"{self.dir}: holds an unfinished run with other parameters "
                                 "(use the same ones to resume, or --overwrite to start again)")
            shutil.rmtree(self.dir)
        self.dir.mkdir(parents=True, exist_ok=True)
        if not stamp.exists():
            with atomic_path(stamp) as tmp:
                tmp.write_text(json.dumps(params, indent=2))

    def missing(self, rel_paths: list[str]) -> list[int]:
        return [i for i, rel in enumerate(rel_paths) if not (self.dir / rel).exists()]

    def finish(self, card: dict, title: str) -> Path:
        import shutil

        (self.dir / "params.json").unlink()
        with atomic_path(self.dir / "dataset.json") as tmp:
            tmp.write_text(json.dumps(card, indent=2))
        counts = "\n".join(f"| {c} | {n} |" for c, n in card["class_counts"].items())
        params = "\n".join(f"- {k}: `{v}`" for k, v in card["parameters"].items())
        with atomic_path(self.dir / "DATASET_CARD.md") as tmp:
            tmp.write_text(f"# {title}\n\nMade by `genai synth` {card['genai_version']} from the generator "
                           f"`{card['generator']}` (weights sha256 `{card['weights_sha256']}`).\n\n"
                           f"Parameters:\n{params}\n\nSeeds: {card['seeds']}\n\n| class | images |\n|---|---|\n"
                           f"{counts}\n\nThese images are synthetic: keep them out of any test or validation set.\n")
        old = None
        if self.out.exists():  # --overwrite: the old set goes only now that the new one is complete
            old = self.out.parent / f".{self.out.name}.old"
            shutil.rmtree(old, ignore_errors=True)
            self.out.rename(old)
        self.dir.rename(self.out)
        if old is not None:
            shutil.rmtree(old)
        return self.out


def _genai_version() -> str:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version("genai")
    except PackageNotFoundError:
        return "unknown"


def _card(gen: SynthGenerator, kind: str, parameters: dict, seeds: list[int], counts: dict[str, int]) -> dict:
    return {"generator": str(gen.run.resolve()), "weights_sha256": gen.weights_sha256,
            "genai_version": _genai_version(), "kind": kind, "classes": gen.classes, "parameters": parameters,
            "seeds": f"{seeds[0]}..{seeds[-1]} (image i has seed {seeds[0]} + i)" if seeds else "none",
            "class_counts": counts}


def sample_folder(run: str | Path, out: str | Path, cfg: SampleConfig = SampleConfig(), *,
                  progress: ProgressFn | None = None, cancel: CancelFn | None = None,
                  overwrite: bool = False, device: str = "cpu") -> Path:
    """Write ``out/CLASS/NNNNNNNN.png`` (the file name is the image's seed) with a dataset card
    (``dataset.json`` lists the classes in the generator's order: ``load_imagefolder`` uses it).

    Resumable (see ``_Work``): every image is fixed by its seed, so a rerun makes the missing ones.
    """
    from genai.synth.data import write_imagefolder

    gen = SynthGenerator(config=GeneratorConfig(run=Path(run), device=device))
    per_class = cfg.per_class if isinstance(cfg.per_class, dict) else {c: cfg.per_class for c in gen.classes}
    unknown = sorted(set(per_class) - set(gen.classes))
    if unknown:
        raise InputError(f"unknown class {', '.join(map(repr, unknown))} (the generator has {', '.join(gen.classes)})")
    if any(n < 0 for n in per_class.values()):
        raise InputError("per-class counts must be >= 0")
    if cfg.sampler not in SAMPLERS:
        raise InputError(f"unknown sampler {cfg.sampler!r} (one of {', '.join(SAMPLERS)})")
    counts = {c: int(per_class.get(c, 0)) for c in gen.classes}
    filtering = "classifier" in gen.meta if cfg.filter is None else cfg.filter
    if filtering and "classifier" not in gen.meta:
        raise InputError(f"{gen.run}: has no classifier to filter with (runs trained with an unlabelled pool have one)")
    parameters = {"guidance": cfg.guidance, "steps": cfg.steps, "sampler": cfg.sampler, "seed": cfg.seed}
    if filtering:
        parameters.update(filter="confidence", max_draws=cfg.max_draws, soft_labels=cfg.soft_labels)
    work = _Work(Path(out), {**parameters, "counts": counts, "weights_sha256": gen.weights_sha256}, overwrite)
    if filtering:
        from genai.synth.confidence import filtered_samples

        report = filtered_samples(gen, work.dir, Path(out), counts, seed=cfg.seed, batch_size=cfg.batch_size,
                                  max_draws=cfg.max_draws, soft_labels=cfg.soft_labels, progress=progress,
                                  cancel=cancel, sample_kwargs=dict(guidance=cfg.guidance, steps=cfg.steps,
                                                                    sampler=cfg.sampler))
        made = {c: report["per_class"][c]["kept"] for c in gen.classes}
        card = _card(gen, "samples", parameters, [], made)
        card["seeds"] = f"candidate j of class c has the seed {cfg.seed} + j x {len(gen.classes)} + c (the file name)"
        card["filter"] = report
        return work.finish(card, "Synthetic dataset")
    labels = np.concatenate([np.full(counts[c], i) for i, c in enumerate(gen.classes)]).astype(np.int64)
    seeds = [cfg.seed + i for i in range(len(labels))]
    names = [f"{s:08d}" for s in seeds]
    todo = work.missing([f"{gen.classes[labels[i]]}/{names[i]}.png" for i in range(len(labels))])
    done0 = len(labels) - len(todo)
    if done0:
        log.info("%s: resuming, %d of %d images already made", out, done0, len(labels))
    for start in range(0, len(todo), cfg.batch_size):  # written batch by batch: a stop loses one batch at most
        part = todo[start:start + cfg.batch_size]
        imgs = gen.sample(labels[part], seeds=[seeds[i] for i in part], guidance=cfg.guidance, steps=cfg.steps,
                          sampler=cfg.sampler, batch_size=cfg.batch_size, cancel=cancel)
        write_imagefolder(work.dir, imgs, labels[part], gen.classes, [names[i] for i in part])
        if progress:
            progress(Progress(done0 + start + len(part), len(labels), "sample"))
    return work.finish(_card(gen, "samples", parameters, seeds, counts), "Synthetic dataset")


def variants_folder(data: LabelledImages, run: str | Path, out: str | Path, *, copies: int = 4,
                    strength: float = 0.5, guidance: float = 2.0, steps: int = 50, seed: int = 0,
                    progress: ProgressFn | None = None, cancel: CancelFn | None = None,
                    overwrite: bool = False, device: str = "cpu") -> Path:
    """``copies`` label-keeping variants of every real image, ``out/CLASS/SOURCE_vK.png`` (SOURCE:
    the image's path inside its class folder, ``/`` as ``__``), resumable like ``sample_folder``."""
    from genai.synth.data import write_imagefolder

    gen = SynthGenerator(config=GeneratorConfig(run=Path(run), device=device))
    if sorted(data.classes) != sorted(gen.classes):
        raise InputError(f"the data's classes ({', '.join(data.classes)}) are not the generator's "
                         f"({', '.join(gen.classes)})")
    data = data.relabel(gen.classes)
    if copies < 1:
        raise InputError(f"--copies must be at least 1, got {copies}")
    stems = ["__".join(Path(f).with_suffix("").parts[1:]) for f in data.files]
    seen: dict[tuple[int, str], str] = {}
    for f, stem, label in zip(data.files, stems, data.labels, strict=True):
        if (label, stem) in seen:
            raise InputError(f"{f} and {seen[label, stem]} would make variants of the same name: rename one")
        seen[label, stem] = f
    src = np.repeat(np.arange(len(data)), copies)
    seeds = [seed + i for i in range(len(src))]
    names = [f"{stems[j]}_v{i % copies}" for i, j in enumerate(src)]
    parameters = {"copies": copies, "strength": strength, "guidance": guidance, "steps": steps, "sampler": "ddim",
                  "seed": seed}
    work = _Work(Path(out), {**parameters, "source_sha256": data.sha256, "weights_sha256": gen.weights_sha256},
                 overwrite)
    todo = work.missing([f"{gen.classes[data.labels[j]]}/{names[i]}.png" for i, j in enumerate(src)])
    done0 = len(src) - len(todo)
    for start in range(0, len(todo), 128):
        part = todo[start:start + 128]
        j = src[part]
        imgs = gen.variants(data.images[j], data.labels[j], seeds=[seeds[i] for i in part], strength=strength,
                            guidance=guidance, steps=steps, cancel=cancel)
        write_imagefolder(work.dir, imgs, data.labels[j], gen.classes, [names[i] for i in part])
        if progress:
            progress(Progress(done0 + start + len(part), len(src), "variants"))
    card = _card(gen, "variants", parameters, seeds, {c: int(n) * copies for c, n in data.counts().items()})
    card["source_sha256"] = data.sha256
    return work.finish(card, "Generative augmentation (image-to-image variants)")
