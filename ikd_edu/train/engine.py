"""The training loop: one loop for teachers and for students with any distillation terms.

Read it top to bottom; the sections follow the life of a run:

1. **setup** - device, process group (:mod:`ikd_edu.train.distributed`), seeds,
   deterministic mode, the datasets and the sample order;
2. **models and loss** - the trained model (teacher or student), the frozen teacher (for
   distillation), and the loss: the ground-truth heatmap loss, or
   :class:`ikd_edu.distill.integral.IntegralKD` for a student;
3. **optimizer and schedule** - Adam & co., per-step learning rate schedules;
4. **checkpoints** - ``last.pt`` (everything needed to continue) and ``best.pt``;
5. **evaluation** - flip test -> decode -> image coordinates -> COCO AP;
6. **the loop** - :func:`train`.

One training step, in symbols (``x`` a batch of crops, ``G`` target heatmaps, ``w`` target
weights, ``p`` training progress in [0, 1])::

    with torch.no_grad():  teacher_taps = teacher.forward_taps(x, taps)     # frozen, eval mode
    student_taps = student.forward_taps(x, taps)
    losses = criterion(student_taps, teacher_taps, G, w, p)                 # {"total", "gt", ...}
    losses["total"].backward(); clip; optimizer.step(); scheduler.step()

GPU-friendliness: nothing inside a step waits for the device. Losses are summed *on the
device* and read back (one sync) only every ``run.log_every`` steps; a non-finite loss is
detected in the same read-back, which names the first bad step and term.
"""
from __future__ import annotations

import contextlib
import csv
import math
import os
import random
import signal
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from ikd_edu.errors import UserError
from ikd_edu.evaluate import coco_subset
from ikd_edu.inference import autocast_context, merge_predictions, predict
from ikd_edu.io import check_output_dir, load_torch, lock_output_dir, save_torch, write_json
from ikd_edu.train import distributed as D
from ikd_edu.train.config import Config, config_from_dict, config_to_dict, save_config

CHECKPOINT_FORMAT = 1
#: config key to lower when a term blows up
TERM_WEIGHT_KEYS = {
    "gt": "optim.lr",
    "logit": "distill.alpha",
    "feature": "distill.feature_weight",
    "affinity": "distill.affinity_weight",
    "relation": "distill.relation_weight",
    "structure": "distill.affinity_weight",
}
#: test hook: SIGKILL this process right after the given global step (resume tests)
KILL_AFTER_STEP_ENV = "IKD_EDU_KILL_AFTER_STEP"


class NonFiniteLossError(UserError):
    """Training stopped because a loss became NaN or infinite (message names step and term)."""


# ======================================================================================
# 1. Setup: device, precision, seeds
# ======================================================================================
def select_device(spec: str = "auto", local_rank: int = 0) -> torch.device:
    """``auto`` -> ``cuda:<local_rank>`` if available, else ``mps``, else ``cpu``."""
    spec = (spec or "auto").lower()
    if spec == "auto":
        if torch.cuda.is_available():
            return torch.device("cuda", local_rank % max(1, torch.cuda.device_count()))
        if getattr(torch.backends, "mps", None) is not None and torch.backends.mps.is_available():
            return torch.device("mps")
        return torch.device("cpu")
    try:
        device = torch.device(spec)
    except RuntimeError:
        raise UserError(f"run.device: {spec!r} is not a device; use auto, cpu, cuda, cuda:N or mps") from None
    if device.type == "cuda":
        if not torch.cuda.is_available():
            raise UserError("run.device: cuda requested but no CUDA GPU is visible; use run.device=auto or cpu")
        if device.index is None:
            device = torch.device("cuda", local_rank % torch.cuda.device_count())
    return device


def amp_settings(spec: str, device: torch.device) -> tuple[torch.dtype | None, bool]:
    """``(autocast dtype or None, use GradScaler)``.

    ``auto``: on CUDA bf16 when supported (no scaler needed), else fp16 with a GradScaler;
    on CPU/MPS full precision.
    """
    if spec == "off" or (spec == "auto" and device.type != "cuda"):
        return None, False
    if spec == "auto":
        return (torch.bfloat16, False) if torch.cuda.is_bf16_supported() else (torch.float16, True)
    if spec == "bf16":
        return torch.bfloat16, False
    return torch.float16, device.type == "cuda"


def seed_everything(seed: int, deterministic: bool = False) -> None:
    """Seed python, numpy and torch; with ``deterministic`` also pick reproducible kernels.

    Deterministic mode: ``torch.use_deterministic_algorithms(True, warn_only=True)`` (an op
    without a deterministic version warns instead of failing), cuDNN deterministic and not
    benchmarking, and ``CUBLAS_WORKSPACE_CONFIG`` for reproducible cuBLAS. Otherwise cuDNN
    benchmarks its algorithms (fastest, not bit-reproducible).
    """
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)
    if deterministic:
        os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")
        torch.use_deterministic_algorithms(True, warn_only=True)
        torch.backends.cudnn.deterministic = True
        torch.backends.cudnn.benchmark = False
    else:
        torch.use_deterministic_algorithms(False)
        torch.backends.cudnn.deterministic = False
        torch.backends.cudnn.benchmark = True


def rng_state() -> dict[str, Any]:
    """The python, numpy, torch (and CUDA) generator states, in checkpoint-safe types."""
    version, internal, gauss = random.getstate()
    kind, keys, pos, has_gauss, cached = np.random.get_state()
    state = {
        "python": [version, list(internal), gauss],
        "numpy": [kind, torch.from_numpy(np.asarray(keys, dtype=np.int64)), int(pos), int(has_gauss), float(cached)],
        "torch": torch.get_rng_state(),
    }
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state: dict[str, Any]) -> None:
    """Inverse of :func:`rng_state`."""
    version, internal, gauss = state["python"]
    random.setstate((version, tuple(internal), gauss))
    kind, keys, pos, has_gauss, cached = state["numpy"]
    np.random.set_state((kind, keys.numpy().astype(np.uint32), pos, has_gauss, cached))
    torch.set_rng_state(state["torch"])
    if "cuda" in state and torch.cuda.is_available():
        with contextlib.suppress(Exception):  # a different GPU count: keep the fresh state
            torch.cuda.set_rng_state_all(state["cuda"])


def seed_worker(worker_id: int) -> None:
    """DataLoader ``worker_init_fn``: derive numpy / python seeds from torch's worker seed."""
    seed = torch.initial_seed() % 2**32
    np.random.seed(seed)
    random.seed(seed)


# ======================================================================================
# 1b. Data
# ======================================================================================
def build_dataset(cfg: Config, split: str, progress: bool = False):
    """The train (augmented) or val dataset of ``cfg.data``; generates the synthetic set if needed."""
    d = cfg.data
    root = Path(d.root)
    if d.dataset == "synthetic":
        from ikd_edu.data.synthetic import ensure_synthetic

        if D.dist_env().is_main:
            ensure_synthetic(root, d.synthetic_images, seed=d.synthetic_seed, val_images=d.synthetic_val_images,
                             image_size=tuple(d.synthetic_image_size), progress=progress)
        D.barrier()
    train = split == "train"
    ann = root / (d.train_ann if train else d.val_ann)
    images = root / (d.train_images if train else d.val_images)
    common = dict(input_size=tuple(d.input_size), heatmap_size=tuple(d.heatmap_size), sigma=d.sigma, train=train,
                  augment=d.augment if train else None, unbiased_encoding=d.unbiased_encoding,
                  target_weight_rule=d.target_weight_rule, channel_order=d.channel_order)
    if d.dataset == "mpii":
        from ikd_edu.data.mpii import TopDownMpiiDataset

        return TopDownMpiiDataset(ann, images, **common)
    from ikd_edu.data.coco import TopDownCocoDataset

    det = None
    if not train and d.val_det_file:
        det = Path(d.val_det_file)
        det = det if det.is_absolute() or det.is_file() else root / det
        if not det.is_file():
            raise UserError(f"data.val_det_file: detection file {det} not found; set data.val_det_file='' "
                            "to evaluate with ground-truth boxes")
    return TopDownCocoDataset(ann, images, det_file=det, **common)


def train_indices(cfg: Config, dataset) -> np.ndarray:
    """Record indices used for training: all, or those of ``data.label_subset`` random images."""
    n_images = cfg.data.label_subset
    if not n_images:
        return np.arange(len(dataset), dtype=np.int64)
    ids = np.unique(dataset.rec_image_id)
    if n_images > len(ids):
        raise UserError(f"data.label_subset: {n_images} images requested but the training set has {len(ids)}")
    chosen = np.random.default_rng(cfg.data.subset_seed).choice(ids, size=n_images, replace=False)
    return np.flatnonzero(np.isin(dataset.rec_image_id, chosen)).astype(np.int64)


def val_indices(cfg: Config, dataset) -> np.ndarray:
    """Record indices used for evaluation: all, or those of the first ``data.val_subset`` images."""
    if not cfg.data.val_subset:
        return np.arange(len(dataset), dtype=np.int64)
    ids = np.unique(dataset.rec_image_id)[: cfg.data.val_subset]
    return np.flatnonzero(np.isin(dataset.rec_image_id, ids)).astype(np.int64)


def make_loader(dataset, batch_sampler, cfg: Config, device: torch.device, seed: int):
    """A DataLoader over :class:`~ikd_edu.train.distributed.SeededSamples` with our batch sampler."""
    workers = cfg.data.num_workers
    return torch.utils.data.DataLoader(
        D.SeededSamples(dataset),
        batch_sampler=batch_sampler,
        num_workers=workers,
        pin_memory=device.type == "cuda",
        worker_init_fn=seed_worker,
        generator=torch.Generator().manual_seed(seed),  # don't draw from the global generator
        persistent_workers=False,
        prefetch_factor=4 if workers > 0 else None,
    )


# ======================================================================================
# 2. Models and loss
# ======================================================================================
def build_criterion(cfg: Config, model: nn.Module, teacher: nn.Module | None) -> nn.Module:
    """The loss: :class:`ikd_edu.distill.integral.IntegralKD` with ``cfg.distill``'s terms.

    A teacher or a labels-only student gets IntegralKD with no terms, i.e. the plain
    ground-truth loss ``L_gt``. Called as ``criterion(student_taps, teacher_taps, target,
    target_weight, progress)`` -> ``{"gt", <terms>, "total"}`` (weighted scalars).
    """
    from ikd_edu.distill.integral import IntegralKD

    d = cfg.distill
    terms = list(d.terms) if cfg.is_distillation else []
    kwargs = dict(terms=terms, alpha=d.alpha, feature_weight=d.feature_weight, affinity_weight=d.affinity_weight,
                  relation_weight=d.relation_weight, feature_tap=d.feature_tap, structure_tap=d.structure_tap,
                  logit_mode=d.logit_mode, temperature=d.temperature, feature_mode=d.feature_mode, decay=d.decay,
                  logit_teacher_weighting=d.logit_teacher_weighting)
    if teacher is not None and terms:
        return IntegralKD.for_models(model, teacher, **kwargs)
    return IntegralKD(**kwargs)


def required_taps(criterion: nn.Module) -> tuple[list[str], list[str]]:
    """(student tap names, teacher tap names) the criterion needs; ``heatmaps`` always for the student."""
    student = list(getattr(criterion, "required_taps", ("heatmaps",)))
    teacher = list(getattr(criterion, "required_teacher_taps", ()))
    if "heatmaps" not in student:
        student.append("heatmaps")
    return student, teacher


class TrainModule(nn.Module):
    """The trained model and its loss as one module, so DDP synchronises adapter weights too.

    ``forward(images, target, target_weight, teacher_taps, progress) -> losses`` runs the
    model's named taps and the criterion.
    """

    def __init__(self, model: nn.Module, criterion: nn.Module, taps: list[str]) -> None:
        super().__init__()
        self.model = model
        self.criterion = criterion
        self.taps = taps

    def forward(self, images, target, target_weight, teacher_taps: dict, progress: float):
        student_taps = self.model.forward_taps(images, self.taps)
        return self.criterion(student_taps, teacher_taps, target, target_weight, progress)


def build_trained_model(cfg: Config) -> nn.Module:
    """The model this run trains (``model.teacher`` for role teacher, else ``model.student``)."""
    from ikd_edu.models import build_model

    opts = cfg.model.teacher_options if cfg.role == "teacher" else cfg.model.student_options
    return build_model(cfg.trained_model_name, num_joints=cfg.num_joints, pretrained=cfg.model.pretrained or None,
                       **opts)


def load_teacher(cfg: Config, device: torch.device) -> nn.Module:
    """The frozen teacher: weights from ``model.teacher_checkpoint``, eval mode, no gradients."""
    from ikd_edu.models import build_model
    from ikd_edu.models.checkpoints import load_pose_checkpoint

    teacher = build_model(cfg.model.teacher, num_joints=cfg.num_joints, **cfg.model.teacher_options)
    load_pose_checkpoint(teacher, cfg.model.teacher_checkpoint, strict=True)
    teacher.eval()
    for p in teacher.parameters():
        p.requires_grad_(False)
    return teacher.to(device)


def set_train_mode(module: nn.Module, freeze_bn: bool) -> None:
    """``module.train()``; with ``freeze_bn`` BatchNorm layers stay in eval mode (running statistics)."""
    module.train()
    if freeze_bn:
        for m in module.modules():
            if isinstance(m, nn.modules.batchnorm._BatchNorm):
                m.eval()


def _cache_rows(n: int, indices) -> torch.Tensor:
    """``(n,)`` row of each dataset record in a cache built over ``indices`` (-1: not cached)."""
    rows = torch.full((n,), -1, dtype=torch.long)
    rows[torch.as_tensor(np.asarray(indices, dtype=np.int64))] = torch.arange(len(indices))
    return rows


def _flip_fixed_batches(dataset, indices, cfg: Config):
    """``(flipped, batch)`` over the training crops of ``indices``: all unflipped (0), then all flipped (1).

    With flip-only augmentation these are the only two crops a training item can be; both
    caches are built from them, in ``indices`` order, ``cfg.run.eval_batch_size`` at a time.
    """
    import copy
    import dataclasses

    for flipped, flip_prob in enumerate((0.0, 1.0)):
        fixed = copy.copy(dataset)
        fixed.augment = dataclasses.replace(dataset.augment, flip_prob=flip_prob)
        loader = torch.utils.data.DataLoader(torch.utils.data.Subset(fixed, [int(i) for i in indices]),
                                             batch_size=cfg.run.eval_batch_size, shuffle=False,
                                             num_workers=cfg.data.num_workers)
        for batch in loader:
            yield flipped, batch


class TeacherCache:
    """The frozen teacher's outputs, computed once per training crop and reused (``distill.teacher_cache``).

    On a CPU the teacher's forward pass is most of a distillation step (quick preset: a
    student step with the teacher on the fly costs ~3x a plain one). The teacher is frozen,
    so its output for a crop never changes. With flip-only augmentation a training crop is
    a function of ``(record, flipped)`` alone, so the teacher is run once on **both**
    versions of every training crop - unflipped and flipped, cut exactly as the training
    dataset cuts them - and its taps are stored at float16: ``taps[name]`` is
    ``(2, R, ...)``, index 0 unflipped, 1 flipped. A lookup is then a gather, and every
    heatmap, feature and affinity target equals the teacher's forward pass on the very crop
    the student sees (to float16 rounding; tested against on-the-fly outputs).

    Mirroring the unflipped output instead would need a mirror-symmetric network, which a
    trained teacher is not. The config rejects scale / rotation / half-body augmentation
    with the cache (those crops are drawn afresh every step: run the teacher on the fly).
    Off by default (``teacher_cache=false`` runs the teacher on every augmented batch).
    """

    def __init__(self, rows: torch.Tensor, taps: dict[str, torch.Tensor]) -> None:
        self.rows = rows  # (len(dataset),) cache row of each record, -1 = not cached; kept on the CPU
        self.taps = taps  # name -> (2, R, ...) float16, index 0 unflipped, 1 flipped

    @classmethod
    @torch.no_grad()
    def build(cls, teacher: nn.Module, dataset, indices, names: list[str], cfg: Config, device: torch.device,
              amp_dtype: torch.dtype | None = None, channels_last: bool = False,
              crops: "CropCache | None" = None) -> "TeacherCache":
        """Run ``teacher`` over the unflipped and flipped training crops of ``indices``; keep the taps ``names``.

        With a :class:`CropCache` built over the same ``indices`` its stored crops are used
        (the very same batches) instead of cutting them again.
        """
        if crops is not None:
            batches = ((f, {"image": chunk}) for f in (0, 1) for chunk in crops.image[f].split(cfg.run.eval_batch_size))
        else:
            batches = _flip_fixed_batches(dataset, indices, cfg)
        chunks: dict[str, list[list[torch.Tensor]]] = {n: [[], []] for n in names}
        for flipped, batch in batches:
            images = batch["image"].to(device, non_blocking=True)  # (B, 3, H, W)
            if channels_last:
                images = images.contiguous(memory_format=torch.channels_last)
            with autocast_context(device, amp_dtype):
                out = teacher.forward_taps(images, names)
            for n in names:
                chunks[n][flipped].append(out[n].detach().to(torch.float16).contiguous())
        rows = _cache_rows(len(dataset), indices)
        return cls(rows, {n: torch.stack([torch.cat(c) for c in v]) for n, v in chunks.items()})

    def nbytes(self) -> int:
        return sum(t.numel() * t.element_size() for t in self.taps.values())

    def lookup(self, index: torch.Tensor, flipped: torch.Tensor) -> dict[str, torch.Tensor]:
        """Teacher taps (float32) of the training crops of records ``index (B,)``, flipped where ``flipped (B,)``."""
        rows = self.rows[index.cpu()]  # checked on the host: no device sync inside a step
        if bool((rows < 0).any()):
            raise RuntimeError("TeacherCache: a batch holds a record that was not cached")
        flip = flipped.cpu().long()
        out = {}
        for name, store in self.taps.items():
            out[name] = store[flip.to(store.device), rows.to(store.device)].float()  # (B, ...)
        return out


class CropCache:
    """Training crops cut and encoded once, then gathered from memory (``data.cache_crops``).

    With flip-only augmentation a training item is a function of ``(record, flipped)`` alone,
    so both versions of every training record are made once: ``image (2, R, 3, H, W)``,
    ``heatmaps (2, R, K, h, w)``, ``target_weight (2, R, K)`` (index 0 unflipped, 1 flipped),
    in the dataset's own dtypes. A batch of keys ``(index, seed)`` from the batch sampler is
    then a gather instead of R crops cut, warped and encoded by DataLoader workers on every
    step; on 2 CPU cores that was half of a quickstart student step. Each key's flip is drawn
    exactly as the dataset draws it (:meth:`flipped`), so a run with the cache sees the very
    same batches as one without (tested). Memory: ``2 R (3HW + Khw + K)`` floats (the
    quickstart's students: R = 1,149 crops of 128x96, 458 MiB).
    """

    def __init__(self, dataset, rows: torch.Tensor, image: torch.Tensor, heatmaps: torch.Tensor,
                 target_weight: torch.Tensor) -> None:
        self.dataset = dataset
        self.rows = rows  # (len(dataset),) row of each record, -1 = not cached
        self.image, self.heatmaps, self.target_weight = image, heatmaps, target_weight

    @classmethod
    def build(cls, dataset, indices, cfg: Config) -> "CropCache":
        """Cut the crops of ``indices`` unflipped and flipped (``cfg.data.num_workers`` processes)."""
        keys = ("image", "heatmaps", "target_weight")
        parts: dict[str, list[list[torch.Tensor]]] = {k: [[], []] for k in keys}
        for flipped, batch in _flip_fixed_batches(dataset, indices, cfg):
            for k in keys:
                parts[k][flipped].append(batch[k])
        rows = _cache_rows(len(dataset), indices)
        return cls(dataset, rows, *(torch.stack([torch.cat(p) for p in parts[k]]) for k in keys))

    def nbytes(self) -> int:
        return sum(t.numel() * t.element_size() for t in (self.image, self.heatmaps, self.target_weight))

    def flipped(self, seed: int) -> bool:
        """The flip the dataset draws for an item seeded with ``seed`` (see ``SeededSamples``)."""
        from ikd_edu.data.transforms import sample_augmentation

        with torch.random.fork_rng(devices=[]):
            torch.default_generator.manual_seed(int(seed))  # as SeededSamples does
            rng = self.dataset._rng()  # the dataset's first draw; half-body (off here) would draw before the flip
        return sample_augmentation(rng, self.dataset.augment)[2]

    def batch(self, keys: list[tuple[int, int]]) -> dict[str, torch.Tensor]:
        """The training batch of ``keys`` (what the DataLoader would collate): image, heatmaps, weights, index, flipped."""
        index = torch.tensor([int(i) for i, _ in keys], dtype=torch.long)
        flipped = torch.tensor([self.flipped(seed) for _, seed in keys])
        rows = self.rows[index]
        if bool((rows < 0).any()):
            raise RuntimeError("CropCache: a batch holds a record that was not cached")
        f = flipped.long()
        return {"image": self.image[f, rows], "heatmaps": self.heatmaps[f, rows],
                "target_weight": self.target_weight[f, rows], "index": index, "flipped": flipped}


# ======================================================================================
# 3. Optimizer and learning-rate schedule (stepped every optimizer step)
# ======================================================================================
def build_optimizer(cfg: Config, params) -> torch.optim.Optimizer:
    o = cfg.optim
    params = [p for p in params if p.requires_grad]
    # fused Adam: one kernel for all parameters (CPU: 7.6 -> 1.7 ms per step for quick-teacher)
    fused = bool(params) and all(p.device.type in ("cpu", "cuda") and p.dtype.is_floating_point for p in params)
    if o.optimizer == "adam":
        return torch.optim.Adam(params, lr=o.lr, weight_decay=o.weight_decay, fused=fused or None)
    if o.optimizer == "adamw":
        return torch.optim.AdamW(params, lr=o.lr, weight_decay=o.weight_decay, fused=fused or None)
    return torch.optim.SGD(params, lr=o.lr, momentum=o.momentum, weight_decay=o.weight_decay, nesterov=False)


def build_scheduler(cfg: Config, optimizer, total_steps: int, steps_per_epoch: int):
    """Per-step schedule. Milestones are epochs, or steps when ``optim.steps > 0``."""
    o = cfg.optim
    if o.schedule == "onecycle":
        return torch.optim.lr_scheduler.OneCycleLR(optimizer, max_lr=o.lr, total_steps=max(total_steps, 2),
                                                   pct_start=o.pct_start)
    unit = 1 if o.steps > 0 else steps_per_epoch
    milestones = [m * unit for m in o.milestones]
    warmup = o.warmup_steps

    def factor(step: int) -> float:
        f = 1.0
        if o.schedule == "multistep":
            f = o.gamma ** sum(step >= m for m in milestones)
        elif o.schedule == "cosine":
            f = 0.5 * (1.0 + math.cos(math.pi * min(step, total_steps) / max(total_steps, 1)))
        if warmup and step < warmup:
            f *= (step + 1) / warmup
        return f

    return torch.optim.lr_scheduler.LambdaLR(optimizer, factor)


# ======================================================================================
# 4. Checkpoints
# ======================================================================================
@dataclass
class Position:
    """Where training stands: ``epoch``, batches done in it, optimizer steps done in total."""

    epoch: int = 0
    batch: int = 0
    step: int = 0


def save_checkpoint(path: Path, *, model, criterion, optimizer, scheduler, scaler, position: Position,
                    cfg: Config, best: dict, metrics: dict | None = None, full: bool = True,
                    timing: dict | None = None) -> None:
    """Write a checkpoint atomically (temp file + ``os.replace``: a crash never leaves half a file).

    ``full`` (``last.pt``): model, loss-module (adapters), optimizer, scheduler, scaler, RNG
    states, position, config, best metric. Otherwise (``best.pt``) only model, loss module,
    position, config and metrics - enough to evaluate it or to distil from it.
    """
    ckpt: dict[str, Any] = {
        "format": CHECKPOINT_FORMAT,
        "model": D.unwrap(model).state_dict(),
        "distill": criterion.state_dict(),
        "model_name": getattr(D.unwrap(model), "name", ""),
        "position": {"epoch": position.epoch, "batch": position.batch, "step": position.step},
        "config": config_to_dict(cfg),
        "input_channels": cfg.data.channel_order,  # rgb | bgr: what this model was trained on
        "best": dict(best),
        "metrics": dict(metrics or {}),
        "timing": dict(timing or {}),  # seconds spent so far: train_s (excl. evaluation), eval_s, teacher_cache_s
    }
    if full:
        ckpt.update(
            optimizer=optimizer.state_dict(),
            scheduler=scheduler.state_dict(),
            scaler=scaler.state_dict() if scaler is not None else {},
            rng=rng_state(),
        )
    save_torch(path, ckpt)


def find_resume_checkpoint(cfg: Config) -> Path | None:
    """``run.resume``: ``auto`` -> ``<out_dir>/last.pt`` if it exists; ``off``; or a path."""
    spec = cfg.run.resume
    if spec == "off":
        return None
    if spec == "auto":
        p = Path(cfg.run.out_dir) / "last.pt"
        return p if p.is_file() else None
    p = Path(spec)
    if not p.is_file():
        raise UserError(f"run.resume: checkpoint {p} not found (use run.resume=auto or off)")
    return p


RESUME_KEYS = ("model", "distill", "optimizer", "scheduler", "rng", "position")


def check_resume_checkpoint(ckpt: Any, path: Path, cfg: Config, model: nn.Module, criterion: nn.Module) -> None:
    """A one-line UserError unless ``ckpt`` is a ``last.pt`` this run (role, model, loss) can continue."""
    from ikd_edu.models.checkpoints import compare_state_dicts, format_mismatch

    how = "resume from a run's last.pt, or start afresh with run.resume=off (or another --out)"
    if not isinstance(ckpt, dict) or any(k not in ckpt for k in RESUME_KEYS):
        lacks = [k for k in RESUME_KEYS if not isinstance(ckpt, dict) or k not in ckpt]
        raise UserError(f"run.resume: {path} is not a resumable ikd-edu checkpoint (it lacks {', '.join(lacks)}); {how}")
    saved = ckpt.get("config") if isinstance(ckpt.get("config"), dict) else {}
    role = saved.get("role")
    if role in ("teacher", "student") and role != cfg.role:
        raise UserError(f"run.resume: {path} is the checkpoint of a {role} run, not of a {cfg.role}; "
                        f"continue it with `ikd-edu train {role}`, or {how}")
    for what, module, state in (("model", model, ckpt["model"]), ("loss (adapters)", criterion, ckpt["distill"])):
        if not isinstance(state, dict):
            raise UserError(f"run.resume: {path} holds no {what} weights; {how}")
        missing, unexpected, mismatched = compare_state_dicts(module.state_dict(), state)
        if missing or unexpected or mismatched:
            raise UserError(f"run.resume: {path} does not fit this run's {what} "
                            f"({format_mismatch(missing, unexpected, mismatched)[:300]}); {how}")
    position = ckpt["position"]
    if not isinstance(position, dict) or set(position) != {"epoch", "batch", "step"}:
        raise UserError(f"run.resume: {path} has no valid position (epoch, batch, step); {how}")


def config_differences(old: dict, new: dict, prefix: str = "") -> list[str]:
    """Keys whose value differs between two config dicts (for the resume note)."""
    out = []
    for k in sorted(set(old) | set(new)):
        a, b = old.get(k), new.get(k)
        if isinstance(a, dict) and isinstance(b, dict) and not k.endswith("_options"):
            out += config_differences(a, b, f"{prefix}{k}.")
        elif a != b:
            out.append(f"{prefix}{k}: {a!r} -> {b!r}")
    return out


# ======================================================================================
# 5. Evaluation: flip test -> decode -> image coordinates -> COCO AP
# ======================================================================================
def score_predictions(pred: dict[str, np.ndarray], dataset, cfg: Config, results_path: Path | None = None) -> dict:
    """COCO keypoint AP (or MPII PCKh) of merged predictions; optionally writes the COCO results JSON.

    COCO / synthetic: rescoring + OKS-NMS + pycocotools (:mod:`ikd_edu.evaluate`), metrics in
    0..1. MPII: PCKh@0.5 (``PCKh``) and PCKh@0.1 in %, with the dataset's head boxes.
    """
    from ikd_edu import evaluate as E

    if cfg.data.dataset == "mpii":
        index = pred["index"]
        gt = dataset.rec_joints[index]  # (N, K, 3)
        sizes = E.head_size_from_box(dataset.head_boxes[index])
        at05 = E.pckh(pred["keypoints"], gt[..., :2], gt[..., 2], sizes, threshold=0.5)
        at01 = E.pckh(pred["keypoints"], gt[..., :2], gt[..., 2], sizes, threshold=0.1)
        return {"PCKh": at05["mean"], "PCKh@0.1": at01["mean"]}
    results = E.keypoints_to_coco_results(pred["image_id"], pred["keypoints"], pred["maxvals"], pred["box_score"],
                                          pred["area"], sigmas=dataset.skeleton.sigmas_array())
    if results_path is not None:
        write_json(results_path, results, indent=None)
    coco = dataset.coco
    image_ids = np.unique(pred["image_id"])
    if len(image_ids) < len(coco.getImgIds()):
        coco = coco_subset(coco, image_ids)
    metrics = E.coco_keypoint_eval(coco, results, sigmas=dataset.skeleton.sigmas_array())
    return {k: float(v) for k, v in metrics.items()}


def primary_metric(cfg: Config) -> str:
    """The metric that picks ``best.pt``: ``AP`` (COCO, synthetic) or ``PCKh`` (MPII)."""
    return "PCKh" if cfg.data.dataset == "mpii" else "AP"


# ======================================================================================
# 6. Logging helpers
# ======================================================================================
class RunLog:
    """CSV files, optional TensorBoard and console lines; silent on ranks > 0."""

    def __init__(self, out_dir: Path, enabled: bool, tensorboard: bool) -> None:
        self.out_dir, self.enabled = out_dir, enabled
        self.writer = None
        if enabled and tensorboard:
            try:
                from torch.utils.tensorboard import SummaryWriter

                self.writer = SummaryWriter(str(out_dir / "tb"))
            except Exception:  # tensorboard not installed: CSV only
                self.writer = None

    def print(self, text: str) -> None:
        if self.enabled:
            from tqdm.auto import tqdm

            tqdm.write(text, file=sys.stdout)
            sys.stdout.flush()

    def csv_row(self, name: str, row: dict) -> None:
        """Append ``row`` to ``<out_dir>/<name>`` (header written once; new columns restart the file)."""
        if not self.enabled:
            return
        path = self.out_dir / name
        header = list(row)
        exists = path.is_file()
        if exists:
            with open(path) as fh:
                first = fh.readline().strip().split(",")
            if first != header:
                exists = False
                path.rename(path.with_suffix(".old.csv"))
        with open(path, "a", newline="") as fh:
            w = csv.writer(fh)
            if not exists:
                w.writerow(header)
            w.writerow([f"{v:.6g}" if isinstance(v, float) else v for v in row.values()])

    def truncate_csv(self, name: str, max_step: int) -> None:
        """Drop rows logged after ``max_step`` (steps an interrupted run did not checkpoint)."""
        path = self.out_dir / name
        if not self.enabled or not path.is_file():
            return
        with open(path) as fh:
            rows = list(csv.reader(fh))
        if not rows:
            return
        keep = [rows[0]] + [r for r in rows[1:] if r and int(float(r[0])) <= max_step]
        from ikd_edu.io import atomic_write

        with atomic_write(path) as fh:
            csv.writer(fh).writerows(keep)

    def scalars(self, prefix: str, values: dict, step: int) -> None:
        if self.writer is not None:
            for k, v in values.items():
                self.writer.add_scalar(f"{prefix}/{k}", v, step)

    def close(self) -> None:
        if self.writer is not None:
            self.writer.close()


def format_terms(values: dict[str, float]) -> str:
    return " ".join(f"{k} {v:.4g}" for k, v in values.items())


def magnitude_warnings(means: dict[str, float], ratio: float) -> list[str]:
    """Warnings for weighted loss terms that differ by more than ``ratio`` x.

    Each distillation term is compared with the ground-truth term ``gt`` (or, without it,
    with the largest term); the suggested weight brings the term to the reference size:
    ``suggested = weight x reference / term``.
    """
    terms = {k: abs(v) for k, v in means.items() if k != "total" and math.isfinite(v)}
    if len(terms) < 2:
        return []
    ref_name = "gt" if "gt" in terms else max(terms, key=terms.get)
    ref = terms[ref_name]
    out = []
    for name, value in terms.items():
        if name == ref_name:
            continue
        hi, lo = max(value, ref), min(value, ref)
        if lo == 0.0 or hi / lo > ratio:
            factor = ref / value if value > 0 else float("inf")
            key = TERM_WEIGHT_KEYS.get(name, f"distill.{name}_weight")
            rel = "larger" if value > ref else "smaller"
            out.append(
                f"warning: weighted term '{name}' ({value:.3g}) is {hi / max(lo, 1e-30):.3g}x {rel} than '{ref_name}' "
                f"({ref:.3g}); consider scaling {key} by {factor:.3g} to bring it to the same magnitude"
            )
    return out


# ======================================================================================
# 7. The loop
# ======================================================================================
@dataclass
class Plan:
    """How long training is: steps per epoch, total steps, epochs."""

    steps_per_epoch: int
    total_steps: int
    epochs: int = field(init=False)

    def __post_init__(self) -> None:
        self.epochs = math.ceil(self.total_steps / self.steps_per_epoch)


def make_plan(cfg: Config, num_train: int, world_size: int) -> Plan:
    spe = D.ResumableBatchSampler.steps_per_epoch(num_train, cfg.optim.batch_size, world_size)
    if spe == 0:
        raise UserError(
            f"optim.batch_size: a global batch of {cfg.optim.batch_size * world_size} crops is larger than the "
            f"{num_train} training crops; lower optim.batch_size or use more data"
        )
    total = cfg.optim.steps if cfg.optim.steps > 0 else cfg.optim.epochs * spe
    return Plan(spe, total)


def _progress_enabled(cfg: Config, is_main: bool) -> bool:
    if not is_main or cfg.run.progress == "off":
        return False
    return cfg.run.progress == "on" or sys.stderr.isatty()


def train(cfg: Config) -> dict:
    """Train ``cfg.role`` on ``cfg.data`` and return a summary.

    Writes into ``cfg.run.out_dir``: ``config.yaml``, ``last.pt`` (resumable state),
    ``best.pt`` (best evaluation), ``metrics.csv`` (step, epoch, lr, each loss term),
    ``eval.csv``, ``val_results.json`` (COCO results of the last evaluation), ``tb/``
    (TensorBoard) and ``summary.json``.

    Resumes from ``last.pt`` (``run.resume=auto``) exactly where it stopped, mid-epoch
    included. Under ``torchrun`` every rank calls this; rank 0 writes the files.

    Returns:
        ``{"out_dir", "best": {metric, value, step}, "final": metrics, "paths": {...},
        "steps", "wall_s", "train_images_per_s", "world_size"}``.
    """
    t_start = time.time()
    info = D.dist_env()
    device = select_device(cfg.run.device, info.local_rank)
    info = D.init_distributed(device)
    try:
        # the run folder is locked against a second writer (rank 0 writes every file)
        with lock_output_dir(cfg.run.out_dir, "run folder") if info.is_main else contextlib.nullcontext():
            return _train(cfg, info, device, t_start)
    finally:
        D.cleanup_distributed()


def _train(cfg: Config, info: D.DistInfo, device: torch.device, t_start: float) -> dict:
    out_dir = Path(cfg.run.out_dir)
    log = RunLog(out_dir, info.is_main, cfg.run.tensorboard)
    if info.is_main:
        out_dir.mkdir(parents=True, exist_ok=True)
    seed_everything(cfg.run.seed, cfg.run.deterministic)
    amp_dtype, use_scaler = amp_settings(cfg.run.amp, device)
    channels_last = cfg.run.channels_last == "on" or (cfg.run.channels_last == "auto" and device.type in ("cuda", "cpu"))
    show_progress = _progress_enabled(cfg, info.is_main)

    # ---- data ------------------------------------------------------------------------
    train_set = build_dataset(cfg, "train", progress=show_progress)
    val_set = build_dataset(cfg, "val")
    train_idx, val_idx = train_indices(cfg, train_set), val_indices(cfg, val_set)
    plan = make_plan(cfg, len(train_idx), info.world_size)

    # ---- models and loss ---------------------------------------------------------------
    model = build_trained_model(cfg).to(device)
    teacher = load_teacher(cfg, device) if cfg.is_distillation else None
    criterion = build_criterion(cfg, model, teacher).to(device)
    student_taps, teacher_taps = required_taps(criterion)
    if channels_last:
        model = model.to(memory_format=torch.channels_last)
        if teacher is not None:
            teacher = teacher.to(memory_format=torch.channels_last)
    module = TrainModule(model, criterion, student_taps)
    if info.is_main:  # room for last.pt (weights + two Adam moments) and best.pt, before any work
        check_output_dir(out_dir, need_bytes=16 * sum(p.numel() for p in module.parameters()) + 2**20, what="run folder")
    optimizer = build_optimizer(cfg, module.parameters())
    scheduler = build_scheduler(cfg, optimizer, plan.total_steps, plan.steps_per_epoch)
    scaler = torch.amp.GradScaler(device.type) if use_scaler else None
    best = {"metric": primary_metric(cfg), "value": float("-inf"), "step": -1}
    pos = Position()
    timing = {"train_s": 0.0, "eval_s": 0.0, "teacher_cache_s": 0.0}  # cumulative over resumes

    # ---- resume ------------------------------------------------------------------------
    resume_from = find_resume_checkpoint(cfg)
    if resume_from is not None:
        ckpt = load_torch(resume_from, map_location="cpu")
        check_resume_checkpoint(ckpt, resume_from, cfg, model, criterion)
        model.load_state_dict(ckpt["model"])
        criterion.load_state_dict(ckpt["distill"])
        try:
            optimizer.load_state_dict(ckpt["optimizer"])
            scheduler.load_state_dict(ckpt["scheduler"])
        except (KeyError, ValueError, RuntimeError, TypeError) as exc:
            raise UserError(f"run.resume: the optimizer state in {resume_from} does not fit this run "
                            f"({type(exc).__name__}); start afresh with run.resume=off or another --out") from None
        if getattr(scheduler, "total_steps", plan.total_steps) != plan.total_steps:
            raise UserError(f"optim.steps: the one-cycle schedule of {resume_from} was planned for "
                            f"{scheduler.total_steps} steps, not {plan.total_steps}; keep the length or start "
                            "a new run (run.resume=off or another run.out_dir)")
        if scaler is not None and ckpt.get("scaler"):
            scaler.load_state_dict(ckpt["scaler"])
        set_rng_state(ckpt["rng"])
        pos = Position(**ckpt["position"])
        best = dict(ckpt.get("best", best))
        timing.update({k: float(v) for k, v in ckpt.get("timing", {}).items() if k in timing})
        changed = config_differences(ckpt.get("config", {}), config_to_dict(cfg))
        log.print(f"resuming from {resume_from} at step {pos.step} (epoch {pos.epoch}, batch {pos.batch})")
        if changed:
            log.print("note: the config differs from the checkpoint's: " + "; ".join(changed))
        log.truncate_csv("metrics.csv", pos.step)
        # the final evaluation is redone below when the run stopped after it: keep one row for it
        log.truncate_csv("eval.csv", pos.step - 1 if pos.step >= plan.total_steps else pos.step)
        del ckpt
    if info.is_main:
        save_config(cfg, out_dir / "config.yaml")

    if cfg.run.compile:
        module = torch.compile(module)
    train_module = D.wrap_ddp(module, device)
    set_train_mode(train_module, cfg.model.freeze_bn)

    # ---- crop cache (data.cache_crops): counted as training time, like the teacher cache ------
    crops: CropCache | None = None
    if cfg.data.cache_crops:
        t_crops = time.time()
        crops = CropCache.build(train_set, train_idx, cfg)
        log.print(f"crop cache: {len(train_idx)} training crops, unflipped and flipped, "
                  f"{crops.nbytes() / 2**20:.0f} MiB, {time.time() - t_crops:.1f} s")
        timing["train_s"] += time.time() - t_crops
    # ---- teacher-output cache (distill.teacher_cache): from the crop cache's crops when there is one
    cache: TeacherCache | None = None
    t_cache = time.time()
    if teacher is not None and teacher_taps and cfg.distill.teacher_cache:
        cache = TeacherCache.build(teacher, train_set, train_idx, teacher_taps, cfg, device, amp_dtype, channels_last,
                                   crops=crops)
        log.print(f"teacher cache: {', '.join(teacher_taps)} of {len(train_idx)} training crops, unflipped and flipped, "
                  f"{cache.nbytes() / 2**20:.1f} MiB float16, {time.time() - t_cache:.1f} s")
    cache_s = time.time() - t_cache
    timing["teacher_cache_s"] += cache_s
    timing["train_s"] += cache_s
    train_s_base = timing["train_s"]

    n_params = sum(p.numel() for p in model.parameters())
    log.print(
        f"training {cfg.variant_name()} ({cfg.trained_model_name}, {n_params / 1e6:.2f} M params) on "
        f"{len(train_idx)} crops, {plan.total_steps} steps ({plan.steps_per_epoch}/epoch, batch "
        f"{cfg.optim.batch_size} x {info.world_size} process(es)); device {device}, "
        f"amp {amp_dtype if amp_dtype else 'off'}; out {out_dir}"
    )

    # ---- state of the loop (on device: no sync inside a step) ------------------------------
    term_names: list[str] = []
    loss_sums: torch.Tensor | None = None  # (T,) sum of each term since the last log
    bad_step = torch.full((), -1, dtype=torch.int64, device=device)  # first step with a non-finite loss
    bad_values: torch.Tensor | None = None  # term values at that step
    steps_since_log = 0
    magnitudes: list[torch.Tensor] = []
    check_magnitudes = cfg.is_distillation and cfg.run.magnitude_batches > 0 and pos.step == 0
    kill_after = int(os.environ.get(KILL_AFTER_STEP_ENV, "0") or 0)
    last_path, best_path = out_dir / "last.pt", out_dir / "best.pt"
    last_eval: dict = {}
    last_eval_step = -1
    images_seen = 0
    t_loop = time.time()
    session_eval_s = 0.0

    def timing_now() -> dict:
        """Cumulative seconds: training (loop minus evaluation, plus the teacher cache), evaluation."""
        return {**timing, "train_s": train_s_base + (time.time() - t_loop) - session_eval_s}

    bar = None
    if show_progress:
        from tqdm.auto import tqdm

        bar = tqdm(total=plan.total_steps, initial=pos.step, desc=cfg.variant_name(), unit="step", dynamic_ncols=True)

    def flush_losses(step: int, epoch: int) -> dict[str, float]:
        """The one sync point: read the summed losses, check finiteness, log."""
        nonlocal loss_sums, steps_since_log
        if loss_sums is None:
            return {}
        bad = int(D.all_reduce_max(bad_step.clone()).item())
        if bad >= 0:
            raise_non_finite(bad)
        means = D.all_reduce_mean(loss_sums / max(steps_since_log, 1)).tolist()
        values = dict(zip(term_names, means))
        lr = optimizer.param_groups[0]["lr"]
        log.csv_row("metrics.csv", {"step": step, "epoch": epoch, "lr": lr, **values})
        log.scalars("train", {**values, "lr": lr}, step)
        if bar is not None:
            bar.set_postfix(loss=f"{values.get('total', 0.0):.3g}", lr=f"{lr:.2g}")
        else:
            log.print(f"step {step}/{plan.total_steps} epoch {epoch} lr {lr:.3g} {format_terms(values)}")
        loss_sums.zero_()
        steps_since_log = 0
        return values

    def raise_non_finite(step: int) -> None:
        values = dict(zip(term_names, bad_values.tolist()))  # this rank's values at the bad step
        culprits = [k for k, v in values.items() if k != "total" and not math.isfinite(v)] or ["total"]
        term = culprits[0]
        key = TERM_WEIGHT_KEYS.get(term, "")
        advice = "lower the lr (optim.lr)" if key in ("", "optim.lr") else f"lower {key} or the lr (optim.lr)"
        keep = f"; the last good checkpoint is {last_path}" if last_path.is_file() else ""
        raise NonFiniteLossError(
            f"non-finite loss at step {step}: term '{term}' = {values.get(term, float('nan'))}; {advice}{keep}"
        )

    def write_last(epoch_pos: Position) -> None:
        # read the losses first: never checkpoint weights that a non-finite loss has touched
        if steps_since_log:
            flush_losses(epoch_pos.step, epoch_pos.epoch)
        else:
            check_finite_only()
        if info.is_main:
            save_checkpoint(last_path, model=model, criterion=criterion, optimizer=optimizer, scheduler=scheduler,
                            scaler=scaler, position=epoch_pos, cfg=cfg, best=best, timing=timing_now())
        D.barrier()

    def check_finite_only() -> None:
        bad = int(D.all_reduce_max(bad_step.clone()).item())
        if bad >= 0:
            raise_non_finite(bad)

    def run_eval(p: Position) -> dict:
        nonlocal last_eval, last_eval_step, best, session_eval_s
        t0 = time.time()
        part = predict(model, val_set, D.rank_slice(val_idx, info.rank, info.world_size), cfg, device,
                       amp_dtype, channels_last)
        parts = D.gather_objects(part)
        metrics: dict = {}
        if info.is_main:
            metrics = score_predictions(merge_predictions(parts), val_set, cfg, out_dir / "val_results.json")
        metrics = D.broadcast_object(metrics)
        name = primary_metric(cfg)
        value = metrics.get(name, float("nan"))
        log.print(f"eval step {p.step}: {name} {value:.4f} ({time.time() - t0:.1f} s) "
                  + " ".join(f"{k} {v:.3f}" for k, v in metrics.items() if k != name))
        log.csv_row("eval.csv", {"step": p.step, "epoch": p.epoch, **metrics})
        log.scalars("val", metrics, p.step)
        if value > best["value"] or best["step"] < 0:
            best = {"metric": name, "value": float(value), "step": p.step}
            if info.is_main:
                save_checkpoint(best_path, model=model, criterion=criterion, optimizer=optimizer,
                                scheduler=scheduler, scaler=scaler, position=p, cfg=cfg, best=best,
                                metrics=metrics, full=False)
        last_eval, last_eval_step = metrics, p.step
        D.barrier()
        session_eval_s += time.time() - t0
        timing["eval_s"] += time.time() - t0
        return metrics

    # ---- epochs and steps ------------------------------------------------------------------
    try:
        while pos.step < plan.total_steps:
            sampler = D.ResumableBatchSampler(train_idx, cfg.optim.batch_size, cfg.run.seed, pos.epoch,
                                              info.rank, info.world_size, start_batch=pos.batch)
            if crops is not None:
                loader = (crops.batch(keys) for keys in sampler)
            else:
                loader = make_loader(train_set, sampler, cfg, device, seed=D.epoch_seed(cfg.run.seed, pos.epoch))
            for batch in loader:
                images = batch["image"].to(device, non_blocking=True)  # (B, 3, H, W)
                if channels_last:
                    images = images.contiguous(memory_format=torch.channels_last)
                target = batch["heatmaps"].to(device, non_blocking=True)  # (B, K, h, w)
                target_weight = batch["target_weight"].to(device, non_blocking=True)  # (B, K)
                progress = pos.step / max(plan.total_steps - 1, 1)

                with autocast_context(device, amp_dtype):
                    t_taps = {}
                    if cache is not None:
                        t_taps = cache.lookup(batch["index"], batch["flipped"])
                    elif teacher is not None and teacher_taps:
                        with torch.no_grad():
                            t_taps = teacher.forward_taps(images, teacher_taps)
                    losses = train_module(images, target, target_weight, t_taps, progress)

                optimizer.zero_grad(set_to_none=True)
                total = losses["total"]
                if scaler is not None:
                    scaler.scale(total).backward()
                    scaler.unscale_(optimizer)
                else:
                    total.backward()
                if cfg.optim.grad_clip > 0:
                    torch.nn.utils.clip_grad_norm_(train_module.parameters(), cfg.optim.grad_clip)
                if scaler is not None:
                    scaler.step(optimizer)
                    scaler.update()
                else:
                    optimizer.step()
                scheduler.step()

                # -- bookkeeping, all on device --
                if not term_names:
                    term_names = list(losses)
                    loss_sums = torch.zeros(len(term_names), device=device)
                    bad_values = torch.zeros(len(term_names), device=device)
                values = torch.stack([losses[k].detach().float() for k in term_names])  # (T,)
                finite = torch.isfinite(values).all()
                first_bad = (~finite) & (bad_step < 0)
                bad_values.copy_(torch.where(first_bad, values, bad_values))
                bad_step.copy_(torch.where(first_bad, torch.full_like(bad_step, pos.step + 1), bad_step))
                loss_sums += values
                steps_since_log += 1
                images_seen += images.shape[0] * info.world_size

                pos.step += 1
                pos.batch += 1
                if pos.batch == plan.steps_per_epoch:
                    pos.epoch, pos.batch = pos.epoch + 1, 0
                if bar is not None:
                    bar.update(1)

                if check_magnitudes and len(magnitudes) < cfg.run.magnitude_batches:
                    magnitudes.append(values.clone())
                    if len(magnitudes) == cfg.run.magnitude_batches:
                        report_magnitudes(log, term_names, magnitudes, cfg)

                if pos.step % cfg.run.log_every == 0:
                    flush_losses(pos.step, pos.epoch if pos.batch else pos.epoch - 1)  # the step's epoch
                epoch_end = pos.batch == 0
                if (cfg.run.ckpt_every and pos.step % cfg.run.ckpt_every == 0) or (epoch_end and not cfg.run.ckpt_every) \
                        or pos.step == plan.total_steps:
                    write_last(Position(pos.epoch, pos.batch, pos.step))
                if (cfg.run.eval_every and pos.step % cfg.run.eval_every == 0) or (epoch_end and not cfg.run.eval_every) \
                        or pos.step == plan.total_steps:
                    check_finite_only()
                    run_eval(Position(pos.epoch, pos.batch, pos.step))
                if kill_after and pos.step == kill_after:
                    os.kill(os.getpid(), signal.SIGKILL)  # test hook: die like a pre-empted job
                if pos.step >= plan.total_steps:
                    break
        if steps_since_log:
            flush_losses(pos.step, pos.epoch)
        if last_eval_step != pos.step:
            run_eval(Position(pos.epoch, pos.batch, pos.step))
    finally:
        if bar is not None:
            bar.close()
        log.close()

    wall = time.time() - t_start
    loop = time.time() - t_loop
    spent = timing_now()
    summary = {
        "variant": cfg.variant_name(),
        "out_dir": str(out_dir),
        "best": best,
        "final": last_eval,
        "steps": pos.step,
        "world_size": info.world_size,
        "wall_s": round(wall, 2),
        "train_s": round(spent["train_s"], 2),  # all sessions: training incl. teacher cache, excl. evaluation
        "eval_s": round(spent["eval_s"], 2),
        "teacher_cache_s": round(spent["teacher_cache_s"], 2),
        "train_images_per_s": round(images_seen / loop, 1) if loop > 0 else None,
        "paths": {
            "config": str(out_dir / "config.yaml"),
            "last": str(last_path),
            "best": str(best_path),
            "metrics_csv": str(out_dir / "metrics.csv"),
            "eval_csv": str(out_dir / "eval.csv"),
            "results": str(out_dir / "val_results.json"),
            "tensorboard": str(out_dir / "tb"),
        },
    }
    if info.is_main:
        write_json(out_dir / "summary.json", summary)
        log.print(f"done: best {best['metric']} {best['value']:.4f} at step {best['step']}; {wall:.1f} s")
    return summary


def report_magnitudes(log: RunLog, names: list[str], samples: list[torch.Tensor], cfg: Config) -> None:
    """Print each weighted term on the first batches and warn about >100x imbalances."""
    stacked = torch.stack(samples).cpu()  # (B, T)
    for i, row in enumerate(stacked.tolist()):
        log.print(f"loss terms, batch {i + 1}: {format_terms(dict(zip(names, row)))}")
    means = dict(zip(names, stacked.abs().mean(0).tolist()))
    for line in magnitude_warnings(means, cfg.run.magnitude_ratio):
        log.print(line)


def evaluate_checkpoint(cfg: Config, checkpoint: str | os.PathLike) -> dict:
    """COCO AP (or PCKh) of a checkpoint on ``cfg``'s validation set (single process).

    The architecture comes from the checkpoint's own config when it has one (an ikd-edu
    checkpoint), else from ``cfg`` (``model.teacher`` for role teacher, else ``model.student``).
    """
    from ikd_edu.models import build_model
    from ikd_edu.models.checkpoints import load_pose_checkpoint

    ckpt = load_torch(checkpoint)
    name, options = cfg.trained_model_name, (cfg.model.teacher_options if cfg.role == "teacher"
                                             else cfg.model.student_options)
    if isinstance(ckpt, dict) and isinstance(ckpt.get("config"), dict):
        saved = config_from_dict(ckpt["config"])
        name = saved.trained_model_name
        options = saved.model.teacher_options if saved.role == "teacher" else saved.model.student_options
    device = select_device(cfg.run.device)
    amp_dtype, _ = amp_settings(cfg.run.amp, device)
    model = build_model(name, num_joints=cfg.num_joints, **options)
    report = load_pose_checkpoint(model, ckpt, strict=True, source=str(checkpoint))
    model.to(device).eval()
    val_set = build_dataset(cfg, "val")
    val_set.channel_order = report.input_channels  # feed what the checkpoint expects (official: BGR)
    pred = predict(model, val_set, val_indices(cfg, val_set), cfg, device, amp_dtype)
    return score_predictions(pred, val_set, cfg)
