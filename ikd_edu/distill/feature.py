"""Feature distillation: the student's features are pushed towards the teacher's.

With student features ``F_s`` ``(N, C_s, H_s, W_s)`` and teacher features ``F_t``
``(N, C_t, H_t, W_t)`` (usually the last trunk stage, ``layer4``):

mode="l2" (FitNets / DWPose): a learnable adapter ``phi`` = 1x1 conv ``C_s -> C_t`` (+ BN)
maps the student into the teacher's channel space, then

    L_feat = mean_{n,c,y,x} ( phi(F_s) - F_t )^2

If the spatial sizes differ (e.g. a student at stride 16 against a teacher at stride 32),
``phi(F_s)`` is resized to ``(H_t, W_t)`` with bilinear interpolation (``align="interpolate"``;
``align="none"`` raises instead). The adapter is trained together with the student (add the
module's parameters to the optimiser) and thrown away after training.

mode="attention" (attention transfer, Zagoruyko & Komodakis 2017): no adapter, channel
counts may differ. The attention map of a feature map is the L2-normalised, flattened
channel mean of squared activations

    a(F) = v / ||v||_2,   v = vec( mean_c F_c^2 )          (length H * W)

    L_at = mean_n || a(F_s) - a(F_t) ||_2^2                 (in [0, 4])

(the student's ``mean_c F_c^2`` map is resized to the teacher's size first if they differ).
The reference AT code additionally divides by ``H * W`` (``.pow(2).mean()``); we sum over
positions so the value does not shrink with resolution.

The teacher features are detached inside the module: gradients never reach the teacher.
"""
from __future__ import annotations

import torch
from torch import nn
from torch.nn import functional as F

from ikd_edu.distill.ground_truth import _full
from ikd_edu.exercise_guard import reference

__all__ = ["FeatureDistillation", "attention_map"]

MODES = ("l2", "attention")
ALIGNS = ("interpolate", "none")


def _shape(t: torch.Tensor) -> str:
    return "(" + ", ".join(str(s) for s in t.shape) + ")"


def attention_map(features: torch.Tensor, size: tuple[int, int] | None = None, eps: float = 1e-12) -> torch.Tensor:
    """``a(F) = normalize(vec(mean_c F^2))``: ``(N, C, H, W) -> (N, H*W)`` (or ``(N, h*w)`` if ``size=(h, w)``).

    ``size`` bilinearly resizes the ``(N, 1, H, W)`` energy map before normalising.
    """
    energy = _full(features).pow(2).mean(dim=1, keepdim=True)  # (N, 1, H, W)
    if size is not None and tuple(energy.shape[-2:]) != tuple(size):
        energy = F.interpolate(energy, size=size, mode="bilinear", align_corners=False)
    return F.normalize(energy.flatten(1), dim=1, eps=eps)  # (N, P)


class FeatureDistillation(nn.Module):
    """Feature term ``L_feat = mean (phi(F_s) - F_t)^2`` (``"l2"``) or attention transfer (``"attention"``).

    Args:
        student_channels: ``C_s`` of the student tap (checked at forward; needed for ``"l2"``).
        teacher_channels: ``C_t`` of the teacher tap.
        use_bn: put a BatchNorm after the 1x1 adapter conv (FitNets/OFD-style; DWPose's adapter
            is a bare conv). BN keeps the adapter's output at a stable scale early in training.
        mode: ``"l2"`` or ``"attention"``.
        align: ``"interpolate"`` (bilinear resize of the student map to the teacher's size when
            they differ) or ``"none"`` (different sizes raise ``ValueError``).

    ``forward(F_s, F_t) -> scalar``.
    """

    def __init__(self, student_channels: int | None, teacher_channels: int | None, use_bn: bool = True,
                 mode: str = "l2", align: str = "interpolate") -> None:
        super().__init__()
        if mode not in MODES:
            raise ValueError(f"unknown feature distillation mode {mode!r}; choose one of {', '.join(MODES)}")
        if align not in ALIGNS:
            raise ValueError(f"unknown align {align!r}; choose one of {', '.join(ALIGNS)}")
        self.mode, self.align, self.use_bn = mode, align, use_bn
        self.student_channels, self.teacher_channels = student_channels, teacher_channels
        self.adapter: nn.Module | None = None
        if mode == "l2":
            if not student_channels or not teacher_channels:
                raise ValueError(
                    "FeatureDistillation(mode='l2') needs student_channels and teacher_channels for its 1x1 adapter; "
                    "read them from the models with model.tap_channels(tap) (or use mode='attention')."
                )
            layers: list[nn.Module] = [nn.Conv2d(student_channels, teacher_channels, 1, bias=not use_bn)]
            if use_bn:
                layers.append(nn.BatchNorm2d(teacher_channels))
            self.adapter = nn.Sequential(*layers)

    def _check(self, student: torch.Tensor, teacher: torch.Tensor) -> None:
        if student.dim() != 4 or teacher.dim() != 4:
            raise ValueError(f"features must be 4-D (N, C, H, W); got student {_shape(student)} and teacher "
                             f"{_shape(teacher)}. Pass feature maps from model.forward_taps, not flattened vectors.")
        if student.shape[0] != teacher.shape[0]:
            raise ValueError(f"student features {_shape(student)} and teacher features {_shape(teacher)} have different "
                             "batch sizes; run both models on the same batch.")
        for who, t, c in (("student", student, self.student_channels), ("teacher", teacher, self.teacher_channels)):
            if self.mode == "l2" and t.shape[1] != c:
                raise ValueError(f"{who} features {_shape(t)} have {t.shape[1]} channels but the adapter was built for "
                                 f"{c}; build FeatureDistillation with {who}_channels={t.shape[1]} "
                                 f"(model.tap_channels(tap)) or distil the tap it was built for.")
        if self.align == "none" and student.shape[2:] != teacher.shape[2:]:
            raise ValueError(f"student features {_shape(student)} and teacher features {_shape(teacher)} differ in "
                             "spatial size; use align='interpolate' or taps of the same stride.")

    @reference
    def forward(self, student_features: torch.Tensor, teacher_features: torch.Tensor) -> torch.Tensor:
        self._check(student_features, teacher_features)
        teacher_features = teacher_features.detach()
        size = tuple(teacher_features.shape[-2:])
        if self.mode == "attention":
            a_s = attention_map(student_features, size)  # (N, P)
            a_t = attention_map(teacher_features)  # (N, P)
            return (a_s - a_t).pow(2).sum(dim=1).mean()
        adapted = self.adapter(student_features)  # (N, C_t, H_s, W_s)
        if tuple(adapted.shape[-2:]) != size:
            adapted = F.interpolate(adapted, size=size, mode="bilinear", align_corners=False)
        return (_full(adapted) - _full(teacher_features)).pow(2).mean()

    def extra_repr(self) -> str:
        return (f"student_channels={self.student_channels}, teacher_channels={self.teacher_channels}, "
                f"mode={self.mode!r}, use_bn={self.use_bn}, align={self.align!r}")
