"""Loading pose checkpoints: ours, the official SimpleBaseline ones, DataParallel ones.

A checkpoint is a *state dict*: ``{parameter name: tensor}``. Loading one is a small,
explicit check: every key the model expects must be there with the same shape, and no
key may be left over. When something does not fit we say exactly which keys, e.g.::

    >>> load_pose_checkpoint(model, "pose_resnet_50_256x192.pth")
    LoadReport(source='pose_resnet_50_256x192.pth', loaded=322, missing=[], ...)

Accepted layouts (files are read with ``torch.load(weights_only=True)``, so a checkpoint
cannot run code on your machine):

* a raw state dict (the official ``pose_resnet_*.pth`` files),
* a wrapper dict ``{'state_dict': ...}``, ``{'model': ...}`` or ``{'model_state_dict': ...}``
  (training checkpoints that also hold the optimiser, epoch, ...),
* keys prefixed with ``module.`` (saved from ``DataParallel`` / ``DistributedDataParallel``).

BatchNorm's ``num_batches_tracked`` counters may be absent (checkpoints from PyTorch < 0.4.1
such as the 2018 SimpleBaseline releases): they are not needed for inference or fine-tuning.

**Input channel order.** The released SimpleBaseline weights expect **BGR** input: the
reference reads images with ``cv2.imread`` and never converts them, then normalises with the
ImageNet mean/std listed in RGB order. ikd-edu checkpoints record what they were trained on
(``"input_channels": "rgb" | "bgr"``, from ``data.channel_order``). :func:`checkpoint_channel_order`
reads it back: the recorded value; ``"bgr"`` for an official ``pose_resnet_*.pth`` (a file of
that name without the field); ``"rgb"`` otherwise. :func:`load_pose_checkpoint` puts it in its
report and on the model (``model.input_channels``), and evaluation feeds crops in that order
(:func:`ikd_edu.data.transforms.to_network_input`).
"""
from __future__ import annotations

import os
from dataclasses import dataclass, field
from typing import Any, Mapping

import torch
from torch import nn

from ikd_edu.errors import UserError

WRAPPER_KEYS = ("state_dict", "model", "model_state_dict")
CHANNEL_ORDERS = ("rgb", "bgr")
OFFICIAL_PREFIX = "pose_resnet_"  # file names of the released SimpleBaseline checkpoints (BGR input)
OPTIONAL_SUFFIXES = ("num_batches_tracked",)
SHOW = 10  # keys listed per category in error messages


@dataclass
class LoadReport:
    """What :func:`load_pose_checkpoint` did.

    Attributes:
        source: file path, or ``"<state dict>"``.
        loaded: number of tensors copied into the model.
        missing: model keys the checkpoint lacks (excluding optional BN counters).
        unexpected: checkpoint keys the model does not have.
        mismatched: ``(key, checkpoint shape, model shape)`` for keys of the wrong shape.
        input_channels: ``"rgb"`` or ``"bgr"``, the input the weights expect
            (:func:`checkpoint_channel_order`).
    """

    source: str
    loaded: int
    missing: list[str] = field(default_factory=list)
    unexpected: list[str] = field(default_factory=list)
    mismatched: list[tuple[str, tuple[int, ...], tuple[int, ...]]] = field(default_factory=list)
    input_channels: str = "rgb"

    @property
    def ok(self) -> bool:
        """True when every key matched."""
        return not (self.missing or self.unexpected or self.mismatched)


def checkpoint_channel_order(obj: Any, source: str | os.PathLike | None = None) -> str:
    """``"rgb"`` or ``"bgr"``: the input channel order a loaded checkpoint ``obj`` expects.

    The recorded ``obj["input_channels"]`` when there is one; else ``"bgr"`` when ``source``
    is an official ``pose_resnet_*.pth`` file; else ``"rgb"`` (ikd-edu's default).
    """
    if isinstance(obj, Mapping) and isinstance(obj.get("input_channels"), str):
        order = obj["input_channels"].lower()
        if order not in CHANNEL_ORDERS:
            raise UserError(f"checkpoint {source or ''} records input_channels={order!r}; expected rgb or bgr")
        return order
    if source is not None and os.path.basename(str(source)).startswith(OFFICIAL_PREFIX):
        return "bgr"
    return "rgb"


def extract_state_dict(obj: Any) -> dict[str, torch.Tensor]:
    """Unwrap ``{'state_dict': ...}``-style wrappers and strip ``module.`` prefixes."""
    for _ in range(3):  # wrappers may nest, e.g. {'model': {'state_dict': ...}}
        if isinstance(obj, Mapping):
            wrapped = next((obj[k] for k in WRAPPER_KEYS if k in obj and isinstance(obj[k], Mapping)), None)
            if wrapped is not None and not any(isinstance(v, torch.Tensor) for v in obj.values()):
                obj = wrapped
                continue
        break
    if not isinstance(obj, Mapping):
        raise UserError(f"a checkpoint must be a state dict (name -> tensor), got {type(obj).__name__}")
    state = {str(k): v for k, v in obj.items() if isinstance(v, torch.Tensor)}
    if not state:
        raise UserError(
            f"the checkpoint holds no tensors (top-level keys: {', '.join(map(str, list(obj)[:10]))}); "
            f"expected a state dict or a wrapper with one of {', '.join(WRAPPER_KEYS)}"
        )
    if all(k.startswith("module.") for k in state):
        state = {k[len("module."):]: v for k, v in state.items()}
    return state


def compare_state_dicts(
    expected: Mapping[str, torch.Tensor], given: Mapping[str, torch.Tensor]
) -> tuple[list[str], list[str], list[tuple[str, tuple[int, ...], tuple[int, ...]]]]:
    """Compare a model's state dict with a checkpoint's.

    Returns ``(missing, unexpected, mismatched)``: keys in ``expected`` only (optional BN
    counters excluded), keys in ``given`` only, and ``(key, given shape, expected shape)``.
    """
    missing = [k for k in expected if k not in given and not k.endswith(OPTIONAL_SUFFIXES)]
    unexpected = [k for k in given if k not in expected]
    mismatched = [
        (k, tuple(given[k].shape), tuple(expected[k].shape))
        for k in expected
        if k in given and tuple(given[k].shape) != tuple(expected[k].shape)
    ]
    return missing, unexpected, mismatched


def _listing(title: str, items: list[str]) -> str:
    more = f", ... (+{len(items) - SHOW} more)" if len(items) > SHOW else ""
    return f"{len(items)} {title}: {', '.join(items[:SHOW])}{more}"


def format_mismatch(missing: list[str], unexpected: list[str], mismatched: list[tuple]) -> str:
    """One readable message: counts and the first keys of each kind."""
    parts = []
    if missing:
        parts.append(_listing("missing keys", missing))
    if unexpected:
        parts.append(_listing("unexpected keys", unexpected))
    if mismatched:
        parts.append(_listing("wrong-shape keys", [f"{k} (checkpoint {list(a)} vs model {list(b)})" for k, a, b in mismatched]))
    return "; ".join(parts)


def load_pose_checkpoint(
    model: nn.Module, path_or_state: str | os.PathLike | Mapping[str, Any], strict: bool = True,
    source: str | None = None,
) -> LoadReport:
    """Load weights into ``model``; returns a :class:`LoadReport`.

    Args:
        model: the pose model (e.g. ``build_model("simplebaseline-r50")``).
        path_or_state: a checkpoint file, or an already loaded (possibly wrapped) state dict.
        strict: if True, any missing / unexpected / wrong-shape key raises a UserError that
            lists them and nothing is loaded. If False, every key that fits is loaded and
            the rest is reported.
        source: the file name of an already loaded ``path_or_state`` (for messages and for
            recognising an official ``pose_resnet_*.pth``).

    Sets ``model.input_channels`` (``"rgb"``/``"bgr"``, see :func:`checkpoint_channel_order`).
    """
    if isinstance(path_or_state, (str, os.PathLike)):
        from ikd_edu.io import load_torch

        source = str(path_or_state)
        raw = load_torch(path_or_state)
    else:
        source = source or "<state dict>"
        raw = path_or_state
    order = checkpoint_channel_order(raw, source)
    state = extract_state_dict(raw)
    expected = model.state_dict()
    missing, unexpected, mismatched = compare_state_dicts(expected, state)
    if strict and (missing or unexpected or mismatched):
        name = getattr(model, "name", type(model).__name__)
        raise UserError(
            f"checkpoint {source} does not fit model {name}: "
            + format_mismatch(missing, unexpected, mismatched)
            + ". Check the model name / num_joints / deconv widths, or load with strict=False."
        )
    bad = {k for k, _, _ in mismatched}
    fitting = {k: v for k, v in state.items() if k in expected and k not in bad}
    model.load_state_dict(fitting, strict=False)
    model.input_channels = order
    return LoadReport(source, len(fitting), missing, unexpected, mismatched, input_channels=order)
