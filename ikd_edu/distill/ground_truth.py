"""The ground-truth heatmap loss, and the shape checks every distillation term shares.

Symbols (the same in every ``distill`` docstring and in the notebooks):

* ``S`` student heatmaps ``(N, K, h, w)``, ``T`` teacher heatmaps, ``G`` ground-truth heatmaps;
* ``w`` target weights ``(N, K)`` (0 for joints that are not labelled or off the map);
* ``N`` instances, ``K`` joints, ``p`` a heatmap pixel (``h * w`` of them).

The reference loss (SimpleBaseline ``JointsMSELoss``) is

    L_gt(S, G) = 0.5 * mean_{n,k,p} ( w_nk * (S_nkp - G_nkp) )^2

which equals the reference code's ``sum_k 0.5 * MSE(S_k * w_k, G_k * w_k) / K``.
"""
from __future__ import annotations

import torch
from torch import nn

from ikd_edu.exercise_guard import reference

__all__ = ["JointsMSELoss", "joints_mse", "check_heatmaps", "check_target_weight"]


def _full(t: torch.Tensor) -> torch.Tensor:
    """Half/bfloat16 -> float32 (losses are reduced in full precision under AMP); float32/64 unchanged."""
    return t.float() if t.dtype in (torch.float16, torch.bfloat16) else t


def _shape(t: torch.Tensor) -> str:
    return "(" + ", ".join(str(s) for s in t.shape) + ")"


def check_heatmaps(student: torch.Tensor, other: torch.Tensor, other_name: str = "teacher") -> None:
    """Raise ``ValueError`` unless ``student`` and ``other`` are both ``(N, K, h, w)`` of one shape.

    The message names both shapes and says what to do (same ``num_joints``, same input size,
    or resize the heatmaps first).
    """
    if student.dim() != 4 or other.dim() != 4:
        raise ValueError(
            f"heatmaps must be 4-D (N, K, h, w); got student {_shape(student)} and {other_name} {_shape(other)}. "
            "Pass batched heatmaps (add a batch axis with .unsqueeze(0) for a single instance)."
        )
    if student.shape != other.shape:
        hint = (
            "the models predict different numbers of joints K: build both with the same num_joints"
            if student.shape[1] != other.shape[1]
            else "the heatmap sizes differ: feed both models the same input size (heatmaps are H/4 x W/4)"
            if student.shape[2:] != other.shape[2:]
            else "the batch sizes differ: give both the same batch of crops"
        )
        raise ValueError(
            f"student heatmaps {_shape(student)} and {other_name} heatmaps {_shape(other)} must have the same "
            f"shape (N, K, h, w); {hint}."
        )


def check_target_weight(heatmaps: torch.Tensor, target_weight: torch.Tensor) -> torch.Tensor:
    """Return ``target_weight`` as ``(N, K)`` (``(N, K, 1)`` from the reference loader is accepted)."""
    n, k = heatmaps.shape[:2]
    if target_weight.dim() == 3 and target_weight.shape[-1] == 1:
        target_weight = target_weight[..., 0]
    if tuple(target_weight.shape) != (n, k):
        raise ValueError(
            f"target_weight {_shape(target_weight)} does not match heatmaps {_shape(heatmaps)}: expected ({n}, {k}), "
            "one weight per instance and joint (the dataset's 'target_weight')."
        )
    return target_weight


@reference
def joints_mse(pred: torch.Tensor, target: torch.Tensor, weight: torch.Tensor | None = None) -> torch.Tensor:
    """``0.5 * mean_{n,k,p} (w_nk (pred - target))^2``; ``weight=None`` means ``w = 1``.

    ``pred``/``target`` ``(N, K, h, w)``, ``weight`` ``(N, K)``. Computed in float32 (safe under AMP).
    """
    diff = _full(pred) - _full(target)  # (N, K, h, w)
    if weight is not None:
        diff = diff * _full(weight)[:, :, None, None]
    return 0.5 * diff.pow(2).mean()


class JointsMSELoss(nn.Module):
    """Ground-truth loss ``L_gt = 0.5 * mean_{n,k,p} (w_nk (S - G))^2`` (SimpleBaseline).

    Args:
        use_target_weight: multiply each joint's error by ``w_nk`` (the reference default);
            ``False`` treats every joint as labelled.

    ``forward(S (N, K, h, w), G (N, K, h, w), w (N, K) or None) -> scalar``.
    """

    def __init__(self, use_target_weight: bool = True) -> None:
        super().__init__()
        self.use_target_weight = use_target_weight

    @reference
    def forward(self, student: torch.Tensor, target: torch.Tensor, target_weight: torch.Tensor | None = None) -> torch.Tensor:
        check_heatmaps(student, target, "ground-truth")
        weight = None
        if self.use_target_weight:
            if target_weight is None:
                raise ValueError("JointsMSELoss(use_target_weight=True) needs target_weight (N, K); pass it or "
                                 "build the loss with use_target_weight=False.")
            weight = check_target_weight(student, target_weight)
        return joints_mse(student, target, weight)

    def extra_repr(self) -> str:
        return f"use_target_weight={self.use_target_weight}"
