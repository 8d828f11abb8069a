"""How big and how fast is a model? Parameters, true MACs and latency.

Conventions (say which one a number uses!):

* **MACs** are multiply-accumulates, counted by ``torch.utils.flop_counter.FlopCounterMode``
  on one forward pass: convolutions (transposed ones included), matmuls. It reports FLOPs
  with one multiply-accumulate = 2 FLOPs, so ``MACs = FLOPs / 2``. BatchNorm, ReLU, pooling
  and additions are not counted (they are a few % and memory-bound anyway).
  SimpleBaseline-ResNet-50 at 1 x 3 x 256 x 192: **5.43 GMACs**, 34.0 M parameters.
* The HRNet repository (and tables copied from it) print **8.9 "GFLOPs"** for the same
  model. That tool counts ``weight.numel() x output H x W`` per layer, which is right for an
  ordinary convolution but counts a stride-2 transposed convolution 4x too much (each
  output pixel there receives only 1/4 of the kernel taps). Its number is MACs-like, not
  FLOPs, and inflated by the three deconvolutions. Applied to our R50 / R101 / R152 that
  rule gives 9.65 / 13.29 / 16.93 G, about 7 % above the published 8.9 / 12.4 / 15.7: the
  rule does not reproduce the published numbers exactly, and the remaining gap is
  unexplained. We report true MACs.

Latency is wall time per batch in eval mode under ``torch.no_grad()``; on CUDA with
``torch.cuda.synchronize()`` around the timed region, ``channels_last`` and (optionally)
bf16 autocast. A CPU shared with other jobs gives noisy numbers: compare ratios, not ms.

Command line::

    ikd-edu profile --models teacher-r50,student --input 256x192 [--batch 1,32] [--no-latency] [--json]
"""
from __future__ import annotations

import argparse
import json
import statistics
import time
from typing import Any, Sequence

import torch
from torch import nn
from torch.utils.flop_counter import FlopCounterMode

from ikd_edu.errors import UserError


def count_params(model: nn.Module, trainable_only: bool = False) -> int:
    """Number of parameters (BatchNorm running statistics are buffers, not counted)."""
    return sum(p.numel() for p in model.parameters() if p.requires_grad or not trainable_only)


def _model_device(model: nn.Module) -> torch.device:
    first = next(model.parameters(), None)
    return first.device if first is not None else torch.device("cpu")


def count_macs(model: nn.Module, input_size: tuple[int, int] = (256, 192), batch: int = 1) -> int:
    """True multiply-accumulates of one forward pass on a ``(batch, 3, H, W)`` input.

    Uses ``FlopCounterMode`` (FLOPs, 1 MAC = 2 FLOPs) and returns ``FLOPs // 2``. The model
    is run in eval mode on zeros on its own device; its train/eval mode is restored after.
    """
    h, w = input_size
    x = torch.zeros(batch, 3, h, w, device=_model_device(model))
    was_training = model.training
    model.eval()
    try:
        with torch.no_grad(), FlopCounterMode(display=False) as counter:
            model(x)
    finally:
        model.train(was_training)
    return counter.get_total_flops() // 2


def measure_latency(
    model: nn.Module,
    input_size: tuple[int, int] = (256, 192),
    batch: int = 1,
    device: str | torch.device | None = None,
    warmup: int | None = None,
    iters: int | None = None,
    amp: bool = True,
    channels_last: bool = True,
) -> float:
    """Median milliseconds per forward pass of a ``(batch, 3, H, W)`` batch.

    Args:
        model: moved to ``device`` (default: the model's device) and put in eval mode.
        warmup / iters: untimed and timed passes (default 10 / 30 on CUDA, 2 / 5 on CPU).
        amp: on CUDA, run under bf16 autocast (ignored on CPU).
        channels_last: on CUDA, use the NHWC memory format (faster convs with tensor cores).
    """
    device = torch.device(device) if device is not None else _model_device(model)
    cuda = device.type == "cuda"
    warmup = (10 if cuda else 2) if warmup is None else warmup
    iters = (30 if cuda else 5) if iters is None else iters
    model = model.to(device).eval()
    x = torch.randn(batch, 3, *input_size, device=device)
    if cuda and channels_last:
        model = model.to(memory_format=torch.channels_last)
        x = x.contiguous(memory_format=torch.channels_last)
    autocast = torch.autocast("cuda", dtype=torch.bfloat16, enabled=cuda and amp)
    times = []
    with torch.no_grad(), autocast:
        for i in range(warmup + iters):
            if cuda:
                torch.cuda.synchronize(device)
            start = time.perf_counter()
            model(x)
            if cuda:
                torch.cuda.synchronize(device)
            if i >= warmup:
                times.append((time.perf_counter() - start) * 1000.0)
    return statistics.median(times)


def profile_models(
    names: Sequence[str],
    input_size: tuple[int, int] = (256, 192),
    batch_sizes: Sequence[int] = (1, 32),
    device: str | torch.device | None = None,
    latency: bool = True,
    num_joints: int = 17,
    warmup: int | None = None,
    iters: int | None = None,
) -> list[dict[str, Any]]:
    """Profile models by name; ratios are relative to the first model.

    Returns one dict per model::

        {"name", "params", "params_m", "macs", "gmacs", "input_size": [H, W],
         "params_ratio", "macs_ratio",
         "latency_ms": {batch: ms}, "latency_ratio": {batch: ratio}}   # latency keys if latency

    ``macs`` are true MACs at batch 1 (see the module docstring).
    """
    from ikd_edu.models import build_model

    if not names:
        raise UserError("no models to profile; e.g. --models teacher-r50,student")
    device = torch.device(device) if device is not None else torch.device("cuda" if torch.cuda.is_available() else "cpu")
    rows: list[dict[str, Any]] = []
    for name in names:
        model = build_model(name, num_joints=num_joints)
        params, macs = count_params(model), count_macs(model, input_size)
        row: dict[str, Any] = {
            "name": name, "params": params, "params_m": params / 1e6, "macs": macs, "gmacs": macs / 1e9,
            "input_size": list(input_size),
        }
        if latency:
            row["device"] = str(device)
            row["latency_ms"] = {
                int(b): measure_latency(model, input_size, int(b), device, warmup=warmup, iters=iters) for b in batch_sizes
            }
        rows.append(row)
        del model
    first = rows[0]
    for row in rows:
        row["params_ratio"] = row["params"] / first["params"]
        row["macs_ratio"] = row["macs"] / first["macs"]
        if latency:
            row["latency_ratio"] = {b: ms / first["latency_ms"][b] for b, ms in row["latency_ms"].items()}
    return rows


def format_table(rows: list[dict[str, Any]]) -> str:
    """A plain-text table of :func:`profile_models` rows (ratios vs the first row)."""
    batches = list(rows[0].get("latency_ms", {}))
    header = ["model", "params (M)", "GMACs", "params %", "MACs %"]
    header += [f"ms @ b{b}" for b in batches] + [f"time % @ b{b}" for b in batches]
    lines = []
    for r in rows:
        cells = [r["name"], f"{r['params_m']:.2f}", f"{r['gmacs']:.3f}", f"{100 * r['params_ratio']:.1f}", f"{100 * r['macs_ratio']:.1f}"]
        cells += [f"{r['latency_ms'][b]:.2f}" for b in batches]
        cells += [f"{100 * r['latency_ratio'][b]:.1f}" for b in batches]
        lines.append(cells)
    widths = [max(len(row[i]) for row in [header, *lines]) for i in range(len(header))]
    fmt = lambda cells: "  ".join(c.ljust(w) if i == 0 else c.rjust(w) for i, (c, w) in enumerate(zip(cells, widths)))  # noqa: E731
    h, w = rows[0]["input_size"]
    out = [fmt(header), fmt(["-" * w_ for w_ in widths])] + [fmt(c) for c in lines]
    note = f"input {h}x{w}; MACs = true multiply-accumulates (FLOPs / 2, torch.utils.flop_counter); % = vs {rows[0]['name']}"
    if batches:
        note += f"; latency: median ms per batch on {rows[0]['device']}"
    return "\n".join(out + [note])


def parse_size(text: str) -> tuple[int, int]:
    """``"256x192"`` -> ``(256, 192)`` (H x W): multiples of 32 within 32..1024 per side."""
    from ikd_edu import validate

    return validate.input_size(validate.parse_size(text, "--input"), "--input")


def _parse_ints(text: str, what: str) -> list[int]:
    try:
        values = [int(v) for v in text.split(",") if v.strip()]
    except ValueError:
        raise UserError(f"{what} must be comma-separated integers, got {text!r}") from None
    if not values or min(values) < 1:
        raise UserError(f"{what} must be positive integers, got {text!r}")
    return values


def add_cli_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--models", default="teacher-r50,student", help="comma-separated model names (default: %(default)s)")
    parser.add_argument("--input", default="256x192", help="input size HxW (default: %(default)s)")
    parser.add_argument("--batch", default="1,32", help="batch sizes for latency (default: %(default)s)")
    parser.add_argument("--num-joints", type=int, default=17, help="K heatmaps (default: %(default)s)")
    parser.add_argument("--device", default=None, help="cpu, cuda, cuda:1 ... (default: cuda if available)")
    parser.add_argument("--no-latency", action="store_true", help="only params and MACs (fast)")
    parser.add_argument("--warmup", type=int, default=None, help="untimed passes (default 10 on CUDA, 2 on CPU)")
    parser.add_argument("--iters", type=int, default=None, help="timed passes (default 30 on CUDA, 5 on CPU)")
    parser.add_argument("--json", action="store_true", help="print JSON instead of a table")


def cli_main(args: argparse.Namespace) -> int:
    names = [n.strip() for n in args.models.split(",") if n.strip()]
    rows = profile_models(
        names, parse_size(args.input), batch_sizes=_parse_ints(args.batch, "--batch"), device=args.device,
        latency=not args.no_latency, num_joints=args.num_joints, warmup=args.warmup, iters=args.iters,
    )
    if args.json:
        print(json.dumps(rows, indent=2))
    else:
        print(format_table(rows))
    return 0
