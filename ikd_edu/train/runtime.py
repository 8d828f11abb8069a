"""Where and how a run computes: device, mixed precision, seeds and random-generator states.

Shared by training (:mod:`ikd_edu.train.engine`), the caches (:mod:`ikd_edu.train.caches`)
and evaluation. ``rng_state`` / ``set_rng_state`` put every generator (python, numpy,
torch, CUDA) into a checkpoint and back, which is what makes a resumed run continue with
the very same augmentation draws.
"""
from __future__ import annotations

import contextlib
import os
import random
from typing import Any

import numpy as np
import torch

from ikd_edu.errors import UserError


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
