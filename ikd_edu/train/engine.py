"""The training loop: one loop for teachers and for students with any distillation terms.

Read it top to bottom; the sections follow the life of a run:

1. **data** - the datasets and the sample order (device, precision and seeds:
   :mod:`ikd_edu.train.runtime`; process groups: :mod:`ikd_edu.train.distributed`);
2. **models and loss** - the trained model (teacher or student), the frozen teacher (for
   distillation), and the loss: the ground-truth heatmap loss, or
   :class:`ikd_edu.distill.integral.IntegralKD` for a student (flip-only caches of crops
   and teacher outputs: :mod:`ikd_edu.train.caches`);
3. **optimizer and schedule** - Adam & co., per-step learning rate schedules;
4. **checkpoints** - ``last.pt`` (everything needed to continue) and ``best.pt``;
5. **evaluation** - flip test -> decode -> image coordinates -> COCO AP;
6. **logging** - CSV files, TensorBoard, console lines, loss-magnitude warnings;
7. **the loop** - :func:`train` and ``_train``, which reads like this::

       run = setup_run(...)            # Run: config, device, log, datasets, plan (fixed)
       state = build_state(run)        # TrainState: model, loss, optimizer, position (changing)
       resume(run, state)              # from last.pt, exactly where it stopped
       build_caches(run, state, caches)   # or reuse them from an earlier run (CacheStore)
       for batch in run_batches(run, state):   # one loader for the rest of the run
           losses = train_step(run, state, batch)
           record_step(run, state, losses, ...)        # on the device: no sync
           flush_losses / save_last / evaluate_and_save  on their schedule
       write_summary(run, state)

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
import dataclasses
import hashlib
import io
import json
import math
import os
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
from ikd_edu.inference import autocast_context, merge_predictions, predict
from ikd_edu.io import check_output_dir, load_torch, lock_output_dir, save_torch, write_json
from ikd_edu.train import distributed as D
from ikd_edu.train.caches import CacheStore, CropCache, TeacherCache
from ikd_edu.train.config import Config, config_from_dict, config_to_dict, save_config
from ikd_edu.train.runtime import (amp_settings, rng_state, seed_everything, seed_worker, select_device,
                                   set_rng_state)

CHECKPOINT_FORMAT = 1
#: test hook: SIGKILL this process right after the given global step (resume tests)
KILL_AFTER_STEP_ENV = "IKD_EDU_KILL_AFTER_STEP"


class NonFiniteLossError(UserError):
    """Training stopped because a loss became NaN or infinite (message names step and term)."""


def term_weight_key(term: str) -> str:
    """Config key to lower when ``term`` blows up or is out of scale: its weight's (registry), ``optim.lr`` for gt."""
    from ikd_edu.distill import registry

    return "optim.lr" if term == "gt" else (registry.weight_key(term) or "")


# ======================================================================================
# 1. Data
# ======================================================================================
def build_dataset(cfg: Config, split: str, progress: bool = False):
    """The train (augmented) or val dataset of ``cfg.data`` (:mod:`ikd_edu.data.registry`).

    A dataset with a ``prepare`` step (the synthetic set: generated if needed) runs it on
    rank 0 first, the other ranks wait.
    """
    from ikd_edu.data.registry import get_dataset

    d = cfg.data
    spec = get_dataset(d.dataset)
    root = Path(d.root)
    if spec.prepare is not None:
        if D.dist_env().is_main:
            spec.prepare(cfg, progress)
        D.barrier()
    train = split == "train"
    ann = root / (d.train_ann if train else d.val_ann)
    images = root / (d.train_images if train else d.val_images)
    common = dict(input_size=tuple(d.input_size), heatmap_size=tuple(d.heatmap_size), sigma=d.sigma, train=train,
                  augment=d.augment if train else None, unbiased_encoding=d.unbiased_encoding,
                  target_weight_rule=d.target_weight_rule, channel_order=d.channel_order)
    return spec.build(cfg, train, ann, images, common)


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


def use_device_pipeline(cfg: Config, device: torch.device) -> bool:
    """``data.pipeline``: ``device``, or ``auto`` on CUDA (:mod:`ikd_edu.data.device_pipeline`)."""
    return cfg.data.pipeline == "device" or (cfg.data.pipeline == "auto" and device.type == "cuda")


def make_loader(dataset, batch_sampler, cfg: Config, device: torch.device, seed: int, pipeline=None):
    """A pinned, prefetching DataLoader over our batch sampler (one for the whole run: workers start once).

    Host pipeline (``pipeline=None``): items of :class:`~ikd_edu.train.distributed.SeededSamples`,
    batched by the sampler. Device pipeline: the finished batches of
    :meth:`~ikd_edu.data.device_pipeline.DevicePipeline.batches` (JPEG bytes + geometry from the
    workers; decode, crops and targets on the device, or inside the workers on a CPU).
    """
    workers = cfg.data.num_workers
    common = dict(num_workers=workers, pin_memory=device.type == "cuda", worker_init_fn=seed_worker,
                  generator=torch.Generator().manual_seed(seed),  # don't draw from the global generator
                  # the sampler spans the whole run, so the workers live (and prefetch across epoch ends)
                  # from the first step to the last; persistent_workers would only keep them past the end
                  persistent_workers=False, prefetch_factor=4 if workers > 0 else None)
    if pipeline is not None:
        return pipeline.batches(dataset, batch_sampler, **common)
    return torch.utils.data.DataLoader(D.SeededSamples(dataset), batch_sampler=batch_sampler, **common)


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

    from ikd_edu.distill import registry
    from ikd_edu.train.config import get_value

    d = cfg.distill
    terms = list(d.terms) if cfg.is_distillation else []
    weights = {t.weight_arg: get_value(cfg, t.weight_key) for t in registry.terms() if t.weight_key}
    kwargs = dict(terms=terms, **weights, feature_tap=d.feature_tap, structure_tap=d.structure_tap,
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

    def forward(self, images, target, target_weight, teacher_taps: dict, progress):
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



# ======================================================================================
# 3. Optimizer and learning-rate schedule (stepped every optimizer step)
# ======================================================================================
def build_optimizer(cfg: Config, params) -> torch.optim.Optimizer:
    o = cfg.optim
    params = [p for p in params if p.requires_grad]
    # fused Adam: one kernel for all parameters instead of one per tensor
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
    """The dataset's metrics of merged predictions (:mod:`ikd_edu.data.registry`); may write the results JSON.

    COCO / synthetic: rescoring + OKS-NMS + pycocotools (:mod:`ikd_edu.evaluate`), metrics in
    0..1, results JSON written to ``results_path``. MPII: PCKh@0.5 (``PCKh``) and PCKh@0.1 in %,
    with the dataset's head boxes.
    """
    from ikd_edu.data.registry import get_dataset

    return get_dataset(cfg.data.dataset).score(pred, dataset, results_path)


def primary_metric(cfg: Config) -> str:
    """The metric that picks ``best.pt``: ``AP`` (COCO, synthetic) or ``PCKh`` (MPII); the registry's."""
    from ikd_edu.data.registry import get_dataset

    return get_dataset(cfg.data.dataset).metric


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
            key = term_weight_key(name) or f"distill.{name}_weight"
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


def train(cfg: Config, caches: CacheStore | None = None) -> dict:
    """Train ``cfg.role`` on ``cfg.data`` and return a summary.

    Writes into ``cfg.run.out_dir``: ``config.yaml``, ``last.pt`` (resumable state),
    ``best.pt`` (best evaluation), ``metrics.csv`` (step, epoch, lr, each loss term),
    ``eval.csv``, ``val_results.json`` (COCO results of the last evaluation), ``tb/``
    (TensorBoard) and ``summary.json``.

    Resumes from ``last.pt`` (``run.resume=auto``) exactly where it stopped, mid-epoch
    included. Under ``torchrun`` every rank calls this; rank 0 writes the files.
    ``caches``: a :class:`~ikd_edu.train.caches.CacheStore` shared by several runs of this
    process, which then cut their crops and run the teacher over them once.

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
            return _train(cfg, info, device, t_start, caches)
    finally:
        D.cleanup_distributed()


def _train(cfg: Config, info: D.DistInfo, device: torch.device, t_start: float,
           caches: CacheStore | None = None) -> dict:
    """The loop, top to bottom: setup, resume, caches, then steps with logging, checkpoints and evaluation."""
    run = setup_run(cfg, info, device, t_start)
    state = build_state(run)
    resume(run, state)
    if info.is_main:
        save_config(cfg, run.out_dir / "config.yaml")
    if cfg.run.compile:
        compile_step(run, state)
    state.module = D.wrap_ddp(state.module, device)
    set_train_mode(state.module, cfg.model.freeze_bn)
    build_caches(run, state, caches)
    start_loop(run, state)
    pos, total = state.pos, run.plan.total_steps
    try:
        for batch in run_batches(run, state):
            losses = train_step(run, state, batch)
            record_step(run, state, losses, batch["image"].shape[0])
            if pos.step % cfg.run.log_every == 0:
                flush_losses(run, state, pos.step, pos.epoch if pos.batch else pos.epoch - 1)  # the step's epoch
            epoch_end = pos.batch == 0
            if _due(cfg.run.ckpt_every, pos.step, epoch_end) or pos.step == total:
                save_last(run, state)
            if _due(cfg.run.eval_every, pos.step, epoch_end) or pos.step == total:
                check_finite(run, state)
                evaluate_and_save(run, state)
            if run.kill_after and pos.step == run.kill_after:
                os.kill(os.getpid(), signal.SIGKILL)  # test hook: die like a pre-empted job
        if state.meter.count:
            flush_losses(run, state, pos.step, pos.epoch)
        if state.last_eval_step != pos.step:
            evaluate_and_save(run, state)
    finally:
        if state.bar is not None:
            state.bar.close()
        run.log.close()
    return write_summary(run, state)


def _due(every: int, step: int, epoch_end: bool) -> bool:
    """Every ``every`` steps, or at the end of every epoch when ``every`` is 0."""
    return (every and step % every == 0) or (epoch_end and not every)


# ---- the run and its state ------------------------------------------------------------
@dataclass
class Run:
    """What does not change while training: config, processes, device, precision, data, plan, log."""

    cfg: Config
    info: D.DistInfo
    device: torch.device
    out_dir: Path
    log: RunLog
    amp_dtype: torch.dtype | None
    use_scaler: bool
    channels_last: bool
    show_progress: bool
    t_start: float
    train_set: Any = None
    val_set: Any = None
    train_idx: np.ndarray | None = None
    val_idx: np.ndarray | None = None
    plan: Plan | None = None
    kill_after: int = 0  # KILL_AFTER_STEP_ENV

    @property
    def last_path(self) -> Path:
        return self.out_dir / "last.pt"

    @property
    def best_path(self) -> Path:
        return self.out_dir / "best.pt"


class LossMeter:
    """Each loss term summed on the device since the last log, and the first non-finite step.

    Nothing here waits for the device: the host reads the sums (and the first bad step with
    its term values) only in :func:`flush_losses` / :func:`check_finite`.
    """

    def __init__(self, device: torch.device) -> None:
        self.device = device
        self.names: list[str] = []  # term names, in the criterion's order ("gt", ..., "total")
        self.sums: torch.Tensor | None = None  # (T,) sum of each term since the last log
        self.bad_step = torch.full((), -1, dtype=torch.int64, device=device)  # first step with a non-finite loss
        self.bad_values: torch.Tensor | None = None  # (T,) term values at that step
        self.count = 0  # steps since the last log
        self.magnitudes: list[torch.Tensor] = []  # (T,) term values of the first batches

    def add(self, losses: dict[str, torch.Tensor], step: int) -> torch.Tensor:
        """Add one step's terms; remember ``step`` if it is the first non-finite one. Returns the (T,) values."""
        if not self.names:
            self.names = list(losses)
            self.sums = torch.zeros(len(self.names), device=self.device)
            self.bad_values = torch.zeros(len(self.names), device=self.device)
        values = torch.stack([losses[k].detach().float() for k in self.names])  # (T,)
        finite = torch.isfinite(values).all()
        first_bad = (~finite) & (self.bad_step < 0)
        self.bad_values.copy_(torch.where(first_bad, values, self.bad_values))
        self.bad_step.copy_(torch.where(first_bad, torch.full_like(self.bad_step, step), self.bad_step))
        self.sums += values
        self.count += 1
        return values


@dataclass
class TrainState:
    """Everything that changes while training (and what ``last.pt`` keeps of it)."""

    model: nn.Module  # the trained model (unwrapped)
    teacher: nn.Module | None  # frozen teacher (distillation), else None
    criterion: nn.Module  # IntegralKD (holds the feature adapters)
    module: nn.Module  # TrainModule(model, criterion), compiled / DDP-wrapped: what a step calls
    teacher_taps: list[str]
    optimizer: torch.optim.Optimizer
    scheduler: Any
    scaler: Any
    meter: LossMeter
    pos: Position = field(default_factory=Position)
    best: dict = field(default_factory=dict)  # {"metric", "value", "step"} of best.pt
    timing: dict = field(default_factory=lambda: {"train_s": 0.0, "eval_s": 0.0, "teacher_cache_s": 0.0})
    crops: CropCache | None = None
    cache: TeacherCache | None = None
    last_eval: dict = field(default_factory=dict)
    last_eval_step: int = -1
    images_seen: int = 0
    check_magnitudes: bool = False
    t_loop: float = 0.0
    train_s_base: float = 0.0  # training seconds before this session's loop (earlier sessions, caches)
    session_eval_s: float = 0.0
    bar: Any = None
    teacher_forward: Any = None  # the compiled teacher.forward_taps (run.compile, on-the-fly teacher)
    step_t: torch.Tensor | None = None  # 0-d device step counter of a compiled run (its decay input)

    def timing_now(self) -> dict:
        """Cumulative seconds: training (loop minus evaluation, plus the teacher cache), evaluation."""
        return {**self.timing, "train_s": self.train_s_base + (time.time() - self.t_loop) - self.session_eval_s}


# ---- setup ------------------------------------------------------------------------------
def setup_run(cfg: Config, info: D.DistInfo, device: torch.device, t_start: float) -> Run:
    """Output folder, log, seeds, precision, the datasets and the plan."""
    out_dir = Path(cfg.run.out_dir)
    log = RunLog(out_dir, info.is_main, cfg.run.tensorboard)
    if info.is_main:
        out_dir.mkdir(parents=True, exist_ok=True)
    seed_everything(cfg.run.seed, cfg.run.deterministic)
    amp_dtype, use_scaler = amp_settings(cfg.run.amp, device)
    channels_last = cfg.run.channels_last == "on" or (cfg.run.channels_last == "auto" and device.type in ("cuda", "cpu"))
    run = Run(cfg, info, device, out_dir, log, amp_dtype, use_scaler, channels_last,
              _progress_enabled(cfg, info.is_main), t_start,
              kill_after=int(os.environ.get(KILL_AFTER_STEP_ENV, "0") or 0))
    run.train_set = build_dataset(cfg, "train", progress=run.show_progress)
    run.val_set = build_dataset(cfg, "val")
    run.train_idx, run.val_idx = train_indices(cfg, run.train_set), val_indices(cfg, run.val_set)
    run.plan = make_plan(cfg, len(run.train_idx), info.world_size)
    return run


def build_state(run: Run) -> TrainState:
    """The trained model, the frozen teacher, the loss, the optimizer and the schedule (fresh)."""
    cfg, device = run.cfg, run.device
    model = build_trained_model(cfg).to(device)
    teacher = load_teacher(cfg, device) if cfg.is_distillation else None
    criterion = build_criterion(cfg, model, teacher).to(device)
    student_taps, teacher_taps = required_taps(criterion)
    if run.channels_last:
        model = model.to(memory_format=torch.channels_last)
        if teacher is not None:
            teacher = teacher.to(memory_format=torch.channels_last)
    module = TrainModule(model, criterion, student_taps)
    if run.info.is_main:  # room for last.pt (weights + two Adam moments) and best.pt, before any work
        check_output_dir(run.out_dir, need_bytes=16 * sum(p.numel() for p in module.parameters()) + 2**20,
                         what="run folder")
    optimizer = build_optimizer(cfg, module.parameters())
    scheduler = build_scheduler(cfg, optimizer, run.plan.total_steps, run.plan.steps_per_epoch)
    scaler = torch.amp.GradScaler(device.type) if run.use_scaler else None
    return TrainState(model=model, teacher=teacher, criterion=criterion, module=module, teacher_taps=teacher_taps,
                      optimizer=optimizer, scheduler=scheduler, scaler=scaler, meter=LossMeter(device),
                      best={"metric": primary_metric(cfg), "value": float("-inf"), "step": -1})


def resume(run: Run, state: TrainState) -> None:
    """Continue from ``last.pt`` (``run.resume``): weights, optimizer, schedule, RNG, position, best, timing."""
    cfg, log, plan = run.cfg, run.log, run.plan
    resume_from = find_resume_checkpoint(cfg)
    if resume_from is None:
        return
    ckpt = load_torch(resume_from, map_location="cpu")
    check_resume_checkpoint(ckpt, resume_from, cfg, state.model, state.criterion)
    state.model.load_state_dict(ckpt["model"])
    state.criterion.load_state_dict(ckpt["distill"])
    try:
        state.optimizer.load_state_dict(ckpt["optimizer"])
        state.scheduler.load_state_dict(ckpt["scheduler"])
    except (KeyError, ValueError, RuntimeError, TypeError) as exc:
        raise UserError(f"run.resume: the optimizer state in {resume_from} does not fit this run "
                        f"({type(exc).__name__}); start afresh with run.resume=off or another --out") from None
    if getattr(state.scheduler, "total_steps", plan.total_steps) != plan.total_steps:
        raise UserError(f"optim.steps: the one-cycle schedule of {resume_from} was planned for "
                        f"{state.scheduler.total_steps} steps, not {plan.total_steps}; keep the length or start "
                        "a new run (run.resume=off or another run.out_dir)")
    if state.scaler is not None and ckpt.get("scaler"):
        state.scaler.load_state_dict(ckpt["scaler"])
    set_rng_state(ckpt["rng"])
    state.pos = Position(**ckpt["position"])
    state.best = dict(ckpt.get("best", state.best))
    state.timing.update({k: float(v) for k, v in ckpt.get("timing", {}).items() if k in state.timing})
    changed = config_differences(ckpt.get("config", {}), config_to_dict(cfg))
    pos = state.pos
    log.print(f"resuming from {resume_from} at step {pos.step} (epoch {pos.epoch}, batch {pos.batch})")
    if changed:
        log.print("note: the config differs from the checkpoint's: " + "; ".join(changed))
    log.truncate_csv("metrics.csv", pos.step)
    # the final evaluation is redone below when the run stopped after it: keep one row for it
    log.truncate_csv("eval.csv", pos.step - 1 if pos.step >= plan.total_steps else pos.step)


def cache_keys(run: Run) -> tuple[str, str]:
    """Keys of this run's crop and teacher caches in a :class:`CacheStore`: everything their values depend on.

    Crops: the data config (loader settings aside) and the training records. Teacher outputs:
    those, plus the teacher's architecture, weights file (path, size, modification time),
    device, precision and memory format.
    """
    cfg = run.cfg
    data = {k: v for k, v in config_to_dict(cfg)["data"].items() if k not in ("num_workers", "pipeline")}
    records = hashlib.sha256(np.asarray(run.train_idx, dtype=np.int64).tobytes()).hexdigest()
    crops = json.dumps([data, records], sort_keys=True, default=str)
    ckpt = Path(cfg.model.teacher_checkpoint)
    stat = ckpt.stat() if ckpt.is_file() else None
    teacher = json.dumps([crops, cfg.model.teacher, cfg.model.teacher_options, str(ckpt.resolve()),
                          stat and [stat.st_size, stat.st_mtime_ns], str(run.device), str(run.amp_dtype),
                          run.channels_last], sort_keys=True, default=str)
    return crops, teacher


def build_caches(run: Run, state: TrainState, store: CacheStore | None = None) -> None:
    """The crop cache (``data.cache_crops``), then the teacher cache (``distill.teacher_cache``) from its crops.

    Both count as training time; the teacher cache also as ``teacher_cache_s``. With a
    ``store`` a cache an earlier run of this process built for the same data (and teacher)
    is reused, at no cost to this run.
    """
    cfg, log, timing = run.cfg, run.log, state.timing
    crops_key, teacher_key = cache_keys(run) if store is not None else ("", "")
    if cfg.data.cache_crops:
        t_crops = time.time()
        build = lambda: CropCache.build(run.train_set, run.train_idx, cfg)  # noqa: E731
        state.crops, reused = store.crops(crops_key, build) if store is not None else (build(), False)
        log.print(f"crop cache: {len(run.train_idx)} training crops, unflipped and flipped, "
                  f"{state.crops.nbytes() / 2**20:.0f} MiB, "
                  + ("reused from an earlier run" if reused else f"{time.time() - t_crops:.1f} s"))
        timing["train_s"] += time.time() - t_crops
    t_cache = time.time()
    if state.teacher is not None and state.teacher_taps and cfg.distill.teacher_cache:
        build = lambda: TeacherCache.build(  # noqa: E731
            state.teacher, run.train_set, run.train_idx, state.teacher_taps, cfg, run.device, run.amp_dtype,
            run.channels_last, crops=state.crops)
        state.cache, reused = (store.teacher(teacher_key, state.teacher_taps, build) if store is not None
                               else (build(), False))
        log.print(f"teacher cache: {', '.join(state.teacher_taps)} of {len(run.train_idx)} training crops, unflipped "
                  f"and flipped, {state.cache.nbytes() / 2**20:.1f} MiB float16, "
                  + ("reused from an earlier run" if reused else f"{time.time() - t_cache:.1f} s"))
    cache_s = time.time() - t_cache
    timing["teacher_cache_s"] += cache_s
    timing["train_s"] += cache_s
    state.train_s_base = timing["train_s"]


def start_loop(run: Run, state: TrainState) -> None:
    """Say what is trained, start the clock and the progress bar."""
    cfg, plan = run.cfg, run.plan
    n_params = sum(p.numel() for p in state.model.parameters())
    run.log.print(
        f"training {cfg.variant_name()} ({cfg.trained_model_name}, {n_params / 1e6:.2f} M params) on "
        f"{len(run.train_idx)} crops, {plan.total_steps} steps ({plan.steps_per_epoch}/epoch, batch "
        f"{cfg.optim.batch_size} x {run.info.world_size} process(es)); device {run.device}, "
        f"amp {run.amp_dtype if run.amp_dtype else 'off'}; out {run.out_dir}"
    )
    state.check_magnitudes = cfg.is_distillation and cfg.run.magnitude_batches > 0 and state.pos.step == 0
    state.t_loop = time.time()
    if run.show_progress:
        from tqdm.auto import tqdm

        state.bar = tqdm(total=plan.total_steps, initial=state.pos.step, desc=cfg.variant_name(), unit="step",
                         dynamic_ncols=True)


# ---- one step ---------------------------------------------------------------------------
def run_batches(run: Run, state: TrainState):
    """Every batch the run still trains on, from ``state.pos`` to the last step: one loader for the whole run.

    From the crop cache (a gather), the host pipeline (a crop per person in the workers) or the
    device pipeline (:mod:`ikd_edu.data.device_pipeline`: each image decoded once, crops,
    targets batched; records of one image grouped into neighbouring batches).
    """
    cfg, pos, info = run.cfg, state.pos, run.info
    pipeline = None
    if state.crops is None and use_device_pipeline(cfg, run.device):
        from ikd_edu.data.device_pipeline import DevicePipeline

        pipeline = DevicePipeline.for_dataset(run.train_set, run.device)
    sampler = D.RunBatchSampler(run.train_idx, cfg.optim.batch_size, cfg.run.seed, pos.epoch, pos.batch,
                                run.plan.total_steps - pos.step, info.rank, info.world_size,
                                group_of=run.train_set.rec_image if pipeline is not None else None)
    if state.crops is not None:
        return (state.crops.batch(keys) for keys in sampler)
    return make_loader(run.train_set, sampler, cfg, run.device, seed=D.epoch_seed(cfg.run.seed, pos.epoch),
                       pipeline=pipeline)


def compile_step(run: Run, state: TrainState) -> None:
    """``run.compile``: the student with its loss, and the on-the-fly teacher (half of an IKD step).

    The decay's training progress is then a 0-d device tensor (:func:`training_progress`): a
    compiled loss takes it as an input, where a new Python float every step would recompile it
    on torch 2.4-2.5 (``specialize_float``) up to the recompile limit.
    """
    state.module = torch.compile(state.module)
    if state.teacher is not None and state.teacher_taps and not run.cfg.distill.teacher_cache:
        state.teacher_forward = torch.compile(state.teacher.forward_taps)
    state.step_t = torch.full((), float(state.pos.step), device=run.device)


def training_progress(step: torch.Tensor, total_steps: int) -> torch.Tensor:
    """Training progress ``p = step / (total - 1)`` as a 0-d tensor on ``step``'s device (compiled runs).

    float32 ``step * scale`` and ``torch.cos`` can differ from the double-precision Python float
    and ``math.cos`` in the last bits, so an uncompiled run keeps the Python float.
    """
    return (step * (1.0 / max(total_steps - 1, 1))).clamp(max=1.0)


def train_step(run: Run, state: TrainState, batch: dict) -> dict[str, torch.Tensor]:
    """Forward (teacher taps from the cache or the teacher), backward, clip, optimizer and schedule step."""
    device, cfg = run.device, run.cfg
    images = batch["image"].to(device, non_blocking=True)  # (B, 3, H, W)
    if run.channels_last:
        images = images.contiguous(memory_format=torch.channels_last)
    target = batch["heatmaps"].to(device, non_blocking=True)  # (B, K, h, w)
    target_weight = batch["target_weight"].to(device, non_blocking=True)  # (B, K)
    if state.step_t is not None:
        progress = training_progress(state.step_t, run.plan.total_steps)  # 0-d device tensor (compiled loss)
    else:
        progress = state.pos.step / max(run.plan.total_steps - 1, 1)

    with autocast_context(device, run.amp_dtype):
        t_taps = {}
        if state.cache is not None:
            t_taps = state.cache.lookup(batch["index"], batch["flipped"])
        elif state.teacher is not None and state.teacher_taps:
            with torch.no_grad():
                t_taps = (state.teacher_forward or state.teacher.forward_taps)(images, state.teacher_taps)
        losses = state.module(images, target, target_weight, t_taps, progress)

    optimizer, scaler = state.optimizer, state.scaler
    optimizer.zero_grad(set_to_none=True)
    total = losses["total"]
    if scaler is not None:
        scaler.scale(total).backward()
        scaler.unscale_(optimizer)
    else:
        total.backward()
    if cfg.optim.grad_clip > 0:
        torch.nn.utils.clip_grad_norm_(state.module.parameters(), cfg.optim.grad_clip)
    if scaler is not None:
        scaler.step(optimizer)
        scaler.update()
    else:
        optimizer.step()
    state.scheduler.step()
    if state.step_t is not None:
        state.step_t += 1
    return losses


def record_step(run: Run, state: TrainState, losses: dict[str, torch.Tensor], batch_size: int) -> None:
    """Bookkeeping after a step, all on the device: loss sums, position, progress bar, first-batch magnitudes."""
    pos, cfg = state.pos, run.cfg
    values = state.meter.add(losses, pos.step + 1)
    state.images_seen += batch_size * run.info.world_size
    pos.step += 1
    pos.batch += 1
    if pos.batch == run.plan.steps_per_epoch:
        pos.epoch, pos.batch = pos.epoch + 1, 0
    if state.bar is not None:
        state.bar.update(1)
    magnitudes = state.meter.magnitudes
    if state.check_magnitudes and len(magnitudes) < cfg.run.magnitude_batches:
        magnitudes.append(values.clone())
        if len(magnitudes) == cfg.run.magnitude_batches:
            report_magnitudes(run.log, state.meter.names, magnitudes, cfg)


# ---- logs, checkpoints, evaluation ------------------------------------------------------
def flush_losses(run: Run, state: TrainState, step: int, epoch: int) -> dict[str, float]:
    """The one sync point: read the summed losses, check finiteness, log."""
    meter = state.meter
    if meter.sums is None:
        return {}
    check_finite(run, state)
    means = D.all_reduce_mean(meter.sums / max(meter.count, 1)).tolist()
    values = dict(zip(meter.names, means))
    lr = state.optimizer.param_groups[0]["lr"]
    run.log.csv_row("metrics.csv", {"step": step, "epoch": epoch, "lr": lr, **values})
    run.log.scalars("train", {**values, "lr": lr}, step)
    if state.bar is not None:
        state.bar.set_postfix(loss=f"{values.get('total', 0.0):.3g}", lr=f"{lr:.2g}")
    else:
        run.log.print(f"step {step}/{run.plan.total_steps} epoch {epoch} lr {lr:.3g} {format_terms(values)}")
    meter.sums.zero_()
    meter.count = 0
    return values


def check_finite(run: Run, state: TrainState) -> None:
    """:class:`NonFiniteLossError` naming the first bad step and term, if any rank saw one."""
    bad = int(D.all_reduce_max(state.meter.bad_step.clone()).item())
    if bad < 0:
        return
    values = dict(zip(state.meter.names, state.meter.bad_values.tolist()))  # this rank's values at the bad step
    culprits = [k for k, v in values.items() if k != "total" and not math.isfinite(v)] or ["total"]
    term = culprits[0]
    key = term_weight_key(term)
    advice = "lower the lr (optim.lr)" if key in ("", "optim.lr") else f"lower {key} or the lr (optim.lr)"
    keep = f"; the last good checkpoint is {run.last_path}" if run.last_path.is_file() else ""
    raise NonFiniteLossError(
        f"non-finite loss at step {bad}: term '{term}' = {values.get(term, float('nan'))}; {advice}{keep}"
    )


def save_last(run: Run, state: TrainState) -> None:
    """``last.pt`` at the current position, after the losses are read: never weights a non-finite loss touched."""
    pos = dataclasses.replace(state.pos)
    if state.meter.count:
        flush_losses(run, state, pos.step, pos.epoch)
    else:
        check_finite(run, state)
    if run.info.is_main:
        save_checkpoint(run.last_path, model=state.model, criterion=state.criterion, optimizer=state.optimizer,
                        scheduler=state.scheduler, scaler=state.scaler, position=pos, cfg=run.cfg, best=state.best,
                        timing=state.timing_now())
    D.barrier()


def evaluate_and_save(run: Run, state: TrainState) -> dict:
    """Evaluate on the validation set (all ranks), log it, and write ``best.pt`` when the metric improved."""
    cfg, info, p = run.cfg, run.info, dataclasses.replace(state.pos)
    t0 = time.time()
    part = predict(state.model, run.val_set, D.rank_slice(run.val_idx, info.rank, info.world_size), cfg, run.device,
                   run.amp_dtype, run.channels_last)
    parts = D.gather_objects(part)
    metrics: dict = {}
    if info.is_main:
        metrics = score_predictions(merge_predictions(parts), run.val_set, cfg, run.out_dir / "val_results.json")
    metrics = D.broadcast_object(metrics)
    name = primary_metric(cfg)
    value = metrics.get(name, float("nan"))
    run.log.print(f"eval step {p.step}: {name} {value:.4f} ({time.time() - t0:.1f} s) "
                  + " ".join(f"{k} {v:.3f}" for k, v in metrics.items() if k != name))
    run.log.csv_row("eval.csv", {"step": p.step, "epoch": p.epoch, **metrics})
    run.log.scalars("val", metrics, p.step)
    if value > state.best["value"] or state.best["step"] < 0:
        state.best = {"metric": name, "value": float(value), "step": p.step}
        if info.is_main:
            save_checkpoint(run.best_path, model=state.model, criterion=state.criterion, optimizer=state.optimizer,
                            scheduler=state.scheduler, scaler=state.scaler, position=p, cfg=cfg, best=state.best,
                            metrics=metrics, full=False)
    state.last_eval, state.last_eval_step = metrics, p.step
    D.barrier()
    state.session_eval_s += time.time() - t0
    state.timing["eval_s"] += time.time() - t0
    return metrics


def write_summary(run: Run, state: TrainState) -> dict:
    """``summary.json`` (rank 0) and the summary :func:`train` returns."""
    out_dir, best = run.out_dir, state.best
    wall = time.time() - run.t_start
    loop = time.time() - state.t_loop
    spent = state.timing_now()
    summary = {
        "variant": run.cfg.variant_name(),
        "out_dir": str(out_dir),
        "best": best,
        "final": state.last_eval,
        "steps": state.pos.step,
        "world_size": run.info.world_size,
        "wall_s": round(wall, 2),
        "train_s": round(spent["train_s"], 2),  # all sessions: training incl. teacher cache, excl. evaluation
        "eval_s": round(spent["eval_s"], 2),
        "teacher_cache_s": round(spent["teacher_cache_s"], 2),
        "train_images_per_s": round(state.images_seen / loop, 1) if loop > 0 else None,
        "paths": {
            "config": str(out_dir / "config.yaml"),
            "last": str(run.last_path),
            "best": str(run.best_path),
            "metrics_csv": str(out_dir / "metrics.csv"),
            "eval_csv": str(out_dir / "eval.csv"),
            "results": str(out_dir / "val_results.json"),
            "tensorboard": str(out_dir / "tb"),
        },
    }
    if run.info.is_main:
        write_json(out_dir / "summary.json", summary)
        run.log.print(f"done: best {best['metric']} {best['value']:.4f} at step {best['step']}; {wall:.1f} s")
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
