"""The learned topology-optimization generator: a U-Net that proposes a near-optimal 2D design in
one pass from the problem, and the few SIMP iterations that make the proposal feasible.

Input: the channels of ``genai.design.dataset.features`` (volume fraction, strain energy
density and von Mises stress of the full solid domain from one FE solve, Fx, Fy, fixed-x,
fixed-y, keep-out). Output: density logits. At inference the keep-out (and keep-solid)
elements are set, and one scalar shift of the logits, found by bisection, makes the proposal's
volume exactly the target: the raw proposal always has the asked volume and respects the
keep-out regions by construction; what it can get wrong is the structure (compliance, floating
pieces, loads left in the void), which the benchmark measures.

Training (``train``) reads the shards of ``pipelines/design_dataset.py``, applies a random D4
symmetry per sample, and minimises BCE against the SIMP density plus a volume term. Weights are
a safetensors file with a ``model.yaml`` manifest in ``models/<id>/`` (kind: topology-generator).
"""

from __future__ import annotations

import hashlib
import logging
import time
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
import yaml
from torch import nn

from genai.design import dataset as D
from genai.design.optimize import DesignResult, FEProblem, Settings, make_solver, optimize
from genai.design import fem
from genai.errors import Cancelled, InputError, ModelError
from genai.paths import atomic_path, builtin_models_dir
from genai.plots import plot_curve
from genai.progress import CancelFn, Progress, ProgressFn, check_cancel

log = logging.getLogger(__name__)
DEFAULT_MODEL = "topogen-64"
MULTIPLE = 8  # the U-Net halves the grid three times


# ------------------------------------------------------------------ the network


def _block(cin: int, cout: int) -> nn.Sequential:
    return nn.Sequential(nn.Conv2d(cin, cout, 3, padding=1), nn.GroupNorm(8, cout), nn.SiLU(),
                         nn.Conv2d(cout, cout, 3, padding=1), nn.GroupNorm(8, cout), nn.SiLU())


class UNet(nn.Module):
    """A plain U-Net: ``widths`` channels per level, max-pool down, bilinear up, skip concat."""

    def __init__(self, in_channels: int = len(D.CHANNELS), widths: tuple[int, ...] = (32, 64, 128, 256)) -> None:
        super().__init__()
        self.widths = tuple(widths)
        self.down = nn.ModuleList()
        c = in_channels
        for w in widths:
            self.down.append(_block(c, w))
            c = w
        self.up = nn.ModuleList(_block(widths[i + 1] + widths[i], widths[i]) for i in reversed(range(len(widths) - 1)))
        self.head = nn.Conv2d(widths[0], 1, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        skips = []
        for i, block in enumerate(self.down):
            x = block(x if i == 0 else F.max_pool2d(x, 2))
            skips.append(x)
        skips.pop()
        for block in self.up:
            skip = skips.pop()
            x = F.interpolate(x, size=skip.shape[-2:], mode="bilinear", align_corners=False)
            x = block(torch.cat([x, skip], 1))
        return self.head(x)[:, 0]


def parameter_count(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


# ------------------------------------------------------------------ inference


def _pad(x: torch.Tensor) -> tuple[torch.Tensor, tuple[int, int]]:
    """Pad (N, C, X, Y) up to multiples of MULTIPLE: fields replicate, keep-out pads as kept out."""
    X, Y = x.shape[-2:]
    px, py = (-X) % MULTIPLE, (-Y) % MULTIPLE
    if px or py:
        x = F.pad(x, (0, py, 0, px), mode="replicate")
        x[:, D.CHANNELS.index("keep_out"), X:, :] = 1
        x[:, D.CHANNELS.index("keep_out"), :, Y:] = 1
        for name in ("fx", "fy", "fixed_x", "fixed_y"):
            x[:, D.CHANNELS.index(name), X:, :] = 0
            x[:, D.CHANNELS.index(name), :, Y:] = 0
    return x, (X, Y)


def fit_volume(logits: torch.Tensor, target: float, solid: torch.Tensor, void: torch.Tensor) -> torch.Tensor:
    """sigmoid(logits + t) with kept-solid = 1 and kept-empty = 0, and t found by bisection so the
    mean density is ``target`` (to 1e-6)."""
    free = ~(solid | void)
    need = (target * logits.numel() - float(solid.sum())) / max(int(free.sum()), 1)
    lo, hi = -60.0, 60.0
    for _ in range(80):
        mid = 0.5 * (lo + hi)
        if float(torch.sigmoid(logits[free] + mid).mean()) > need:
            hi = mid
        else:
            lo = mid
    x = torch.sigmoid(logits + 0.5 * (lo + hi))
    return torch.where(solid, torch.ones_like(x), torch.where(void, torch.zeros_like(x), x))


@dataclass
class Manifest:
    id: str
    name: str
    kind: str
    widths: list[int]
    channels: list[str]
    weights: str
    sha256: str
    license: str
    description: str = ""
    training: dict = field(default_factory=dict)


class TopologyGenerator:
    """A trained U-Net and what it needs to propose designs (CPU by default)."""

    def __init__(self, model: UNet, manifest: Manifest | None = None, device: str = "cpu") -> None:
        self.model = model.to(device).eval()
        self.manifest = manifest
        self.device = torch.device(device)

    @classmethod
    def load(cls, name_or_folder: str | Path = DEFAULT_MODEL, device: str = "cpu") -> "TopologyGenerator":
        folder = Path(name_or_folder)
        if not (folder / "model.yaml").is_file():
            folder = builtin_models_dir() / str(name_or_folder)
        path = folder / "model.yaml"
        if not path.is_file():
            raise ModelError(f"{name_or_folder}: no such topology generator (no {path})")
        try:
            manifest = Manifest(**yaml.safe_load(path.read_text()))
        except (TypeError, yaml.YAMLError) as exc:
            raise ModelError(f"{path}: not a topology generator manifest ({exc})") from None
        if manifest.kind != "topology-generator":
            raise ModelError(f"{path}: kind {manifest.kind!r} is not a topology generator")
        if manifest.channels != list(D.CHANNELS):
            raise ModelError(f"{path}: made for the input channels {manifest.channels}, this version has "
                             f"{list(D.CHANNELS)}")
        weights = folder / manifest.weights
        if not weights.is_file():
            raise ModelError(f"{weights}: the weights are missing")
        digest = hashlib.sha256(weights.read_bytes()).hexdigest()
        if digest != manifest.sha256:
            raise ModelError(f"{weights}: sha256 {digest[:12]}... is not the manifest's {manifest.sha256[:12]}...")
        from safetensors.torch import load_file

        model = UNet(len(manifest.channels), tuple(manifest.widths))
        try:
            model.load_state_dict({k: v.float() for k, v in load_file(weights).items()})
        except (RuntimeError, ValueError) as exc:
            raise ModelError(f"{weights}: does not fit the U-Net of {path} ({str(exc).splitlines()[0]})") from None
        return cls(model, manifest, device)

    @torch.inference_mode()
    def logits(self, inputs: np.ndarray) -> torch.Tensor:
        """(C, X, Y) or (N, C, X, Y) inputs -> (X, Y) or (N, X, Y) logits (float32, CPU)."""
        x = torch.as_tensor(inputs, dtype=torch.float32)
        single = x.dim() == 3
        x, (X, Y) = _pad(x[None] if single else x)
        out = self.model(x.to(self.device)).float().cpu()[:, :X, :Y]
        return out[0] if single else out

    def propose(self, problem: FEProblem, volfrac: float) -> tuple[np.ndarray, float]:
        """The proposal for one problem (an element field) and the milliseconds it took, the
        FE solve of the input channels included."""
        t0 = time.perf_counter()
        inputs = D.features(problem, volfrac)
        x = fit_volume(self.logits(inputs).double(), volfrac, problem.solid, problem.void)
        for axis in problem.symmetry:  # a mirror-symmetric problem gets a mirror-symmetric proposal
            x = 0.5 * (x + torch.flip(x, (axis,)))
        return x.numpy(), 1000 * (time.perf_counter() - t0)


# ------------------------------------------------------------------ evaluation and refinement


@dataclass(frozen=True)
class Evaluation:
    compliance: float  # weighted over the load cases, of modulus E (as ``optimize`` reports it)
    per_case: list[float]
    max_displacement: float
    solver: str


def evaluate(problem: FEProblem, density: np.ndarray, penal: float = 3.0, Emin: float = 1e-9) -> Evaluation:
    """The SIMP compliance of a density field: one FE solve."""
    ke = fem.element_stiffness(2, problem.nu)
    try:  # exact where the band allows (banded direct solve; multigrid beyond the band)
        solver, name = make_solver(problem, ke, "direct")
    except ValueError:
        solver, name = make_solver(problem, ke, "multigrid")
    E = fem.simp(torch.as_tensor(density, dtype=fem.DTYPE), penal, 1.0, Emin)
    u = solver.solve(E, problem.loads.to(fem.DTYPE))
    cases = (E * fem.element_energy(problem.grid, ke, u)).flatten(1).sum(1) / problem.E
    disp = float(u.reshape(u.shape[0], -1, 2).norm(dim=-1).max()) / problem.E
    return Evaluation(float((problem.weights.to(fem.DTYPE) * cases).sum()), [float(c) for c in cases], disp, name)


def compliance_of(problem: FEProblem, density: np.ndarray, penal: float = 3.0, Emin: float = 1e-9) -> float:
    return evaluate(problem, density, penal, Emin).compliance


def refine(problem: FEProblem, settings: Settings, proposal: np.ndarray, iterations: int, *,
           progress: ProgressFn | None = None, cancel: CancelFn | None = None,
           snapshots: tuple[int, ...] = ()) -> DesignResult:
    """``iterations`` SIMP iterations warm-started from the proposal: OC with the settings' move
    (0.2) and filter, without projection (a few iterations leave no room for its continuation).
    The proposal enters as the design variables, so with the density filter the first design is
    the proposal filtered once more. The result's compliance, per case and displacement are
    those of its final density (one more FE solve; ``optimize`` reports the iterate before its
    last update, as top88 prints). With 0 iterations: the proposal itself, evaluated."""
    t0 = time.perf_counter()
    if iterations > 0:
        result = optimize(problem, replace(settings, max_iterations=iterations, tol_change=0.0, optimizer="oc",
                                           projection=False),
                          start=proposal, progress=progress, cancel=cancel, snapshots=snapshots)
    else:
        result = DesignResult(density=proposal, compliance=0.0, compliance_per_case=[], iterations=0,
                              volume_fraction=float(proposal.mean()), max_displacement=0.0,
                              grayness=float((4 * proposal * (1 - proposal)).mean()), history=[], seconds=0.0,
                              solver="", solver_iterations=0)
    ev = evaluate(problem, result.density, settings.penal, settings.Emin)
    return replace(result, compliance=ev.compliance, compliance_per_case=ev.per_case,
                   max_displacement=ev.max_displacement, solver=result.solver or ev.solver,
                   history=result.history + [ev.compliance] if iterations > 0 else [ev.compliance],
                   seconds=time.perf_counter() - t0)


# ------------------------------------------------------------------ training


@dataclass(frozen=True)
class TrainConfig:
    steps: int = 3000
    batch_size: int = 32
    learning_rate: float = 2e-3
    weight_decay: float = 1e-4
    widths: tuple[int, ...] = (32, 64, 128, 256)
    volume_weight: float = 1.0
    seed: int = 0
    threads: int | None = None
    checkpoint_every: int = 500


def load_training_arrays(folders: list[Path]) -> tuple[np.ndarray, np.ndarray]:
    """Inputs (N, C, X, Y) and SIMP densities (N, X, Y) of one or more data set folders of one shape."""
    xs, ys = [], []
    for folder in folders:
        data = D.read_shards(folder)
        xs.append(data["inputs"].astype(np.float32))
        ys.append(data["density"].astype(np.float32))
    shapes = {x.shape[-2:] for x in xs}
    if len(shapes) != 1:
        raise InputError(f"training folders of several grid shapes {sorted(shapes)}: train on one shape at a time")
    return np.concatenate(xs), np.concatenate(ys)


def _batch(x: np.ndarray, y: np.ndarray, idx: np.ndarray,
           rng: np.random.Generator) -> tuple[torch.Tensor, torch.Tensor]:
    square = x.shape[-1] == x.shape[-2]
    pairs = [D.d4(x[i], y[i], int(rng.integers(8 if square else 4))) for i in idx]
    return torch.from_numpy(np.stack([p[0] for p in pairs])), torch.from_numpy(np.stack([p[1] for p in pairs]))


def loss_of(logits: torch.Tensor, inputs: torch.Tensor, target: torch.Tensor, volume_weight: float) -> torch.Tensor:
    """BCE against the SIMP density (soft targets) plus the squared error of the mean density
    against the asked volume fraction."""
    bce = F.binary_cross_entropy_with_logits(logits, target)
    vf = inputs[:, D.CHANNELS.index("volfrac")].mean((-1, -2))
    vol = ((torch.sigmoid(logits).mean((-1, -2)) - vf) ** 2).mean()
    return bce + volume_weight * vol


def train(inputs: np.ndarray, density: np.ndarray, out: Path, config: TrainConfig = TrainConfig(), *,
          model_id: str = DEFAULT_MODEL, validation: tuple[np.ndarray, np.ndarray] | None = None,
          description: str = "", progress: ProgressFn | None = None, cancel: CancelFn | None = None) -> Manifest:
    """Train a U-Net and write ``out/model.yaml`` + ``out/<id>.safetensors`` (fp32). A cancel
    (Ctrl-C) saves ``out/.checkpoint.pt`` (also saved every ``checkpoint_every`` steps); the same
    call with the same data resumes from it, to the weights of an uninterrupted run."""
    from safetensors.torch import save_file

    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    if config.threads:
        torch.set_num_threads(config.threads)
    torch.manual_seed(config.seed)
    model = UNet(inputs.shape[1], config.widths)
    opt = torch.optim.AdamW(model.parameters(), lr=config.learning_rate, weight_decay=config.weight_decay)
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=config.learning_rate, total_steps=config.steps,
                                                pct_start=0.05)
    ckpt_path = out / ".checkpoint.pt"
    data_id = {"samples": int(len(inputs)), "shape": list(inputs.shape[1:]),
               "sha256": hashlib.sha256(np.ascontiguousarray(density[:: max(1, len(density) // 64)])).hexdigest()}
    step, losses = 0, []

    def save() -> None:
        with atomic_path(ckpt_path) as tmp:
            torch.save({"config": asdict(config), "data": data_id, "model": model.state_dict(),
                        "opt": opt.state_dict(), "sched": sched.state_dict(), "step": step, "losses": losses}, tmp)

    if ckpt_path.exists():
        ckpt = torch.load(ckpt_path, weights_only=False)
        if ckpt["config"] != asdict(config) or ckpt.get("data") != data_id:
            raise InputError(f"{out}: holds an unfinished training with other settings or data; remove {ckpt_path} "
                             "or use another folder")
        model.load_state_dict(ckpt["model"])
        opt.load_state_dict(ckpt["opt"])
        sched.load_state_dict(ckpt["sched"])
        step, losses = ckpt["step"], ckpt["losses"]
        log.info("%s: resuming at step %d", out, step)
    model.train()
    t0 = time.perf_counter()
    try:
        while step < config.steps:
            check_cancel(cancel)
            rng = np.random.default_rng([config.seed, step])
            xb, yb = _batch(inputs, density, rng.integers(0, len(inputs), config.batch_size), rng)
            loss = loss_of(model(xb), xb, yb, config.volume_weight)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            sched.step()
            step += 1
            losses.append(loss.item())
            if progress:
                progress(Progress(step, config.steps, "steps"))
            if step % config.checkpoint_every == 0 and step < config.steps:
                save()  # a kill loses at most this many steps
    except Cancelled:
        save()
        raise
    seconds = time.perf_counter() - t0
    model.eval()
    training = {"samples": int(len(inputs)), "grid": list(inputs.shape[-2:]), "steps": config.steps,
                "batch_size": config.batch_size, "learning_rate": config.learning_rate,
                "volume_weight": config.volume_weight, "seed": config.seed, "augmentation": "D4",
                "final_loss": float(np.mean(losses[-50:])), "seconds_this_run": round(seconds, 1),
                "parameters": parameter_count(model)}
    if validation is not None:
        with torch.inference_mode():
            xv = torch.from_numpy(validation[0][:256])
            training["validation_loss"] = float(loss_of(model(xv), xv, torch.from_numpy(validation[1][:256]),
                                                        config.volume_weight))
    weights = out / f"{model_id}.safetensors"
    with atomic_path(weights) as tmp:
        save_file({k: v.contiguous() for k, v in model.state_dict().items()}, str(tmp))
    manifest = Manifest(id=model_id, name=f"Topology generator {model_id}", kind="topology-generator",
                        widths=list(config.widths), channels=list(D.CHANNELS), weights=weights.name,
                        sha256=hashlib.sha256(weights.read_bytes()).hexdigest(), license="Apache-2.0",
                        description=description, training=training)
    with atomic_path(out / "model.yaml") as tmp:
        tmp.write_text(yaml.safe_dump(asdict(manifest), sort_keys=False, width=110))
    ckpt_path.unlink(missing_ok=True)
    plot_curve(losses, out / "loss.png", "training loss (BCE + volume)")
    return manifest
