"""Logit distillation: the teacher's heatmaps are soft targets for the student (FPD form).

With ``S`` student, ``T`` teacher, ``G`` ground-truth heatmaps ``(N, K, h, w)`` and target
weights ``w`` ``(N, K)``:

    L_logit = (1 - alpha) * L_gt(S, G) + alpha * L_kd(S, T)

    L_gt(S, G) = 0.5 * mean_{n,k,p} ( w_nk (S - G) )^2                      (ground truth)

    mode="mse":  L_kd(S, T) = 0.5 * mean_{n,k,p} ( v_nk (S - T) )^2         (FPD, Zhang et al. 2019)
    mode="kl":   L_kd(S, T) = tau^2 * mean_{n,k} v_nk KL( softmax(T_nk / tau) || softmax(S_nk / tau) )

where the softmax runs over the ``h * w`` pixels of one joint's heatmap and ``tau`` is the
temperature. ``v`` are the *teacher* weights, chosen by the named option
``teacher_weighting`` (config ``distill.logit_teacher_weighting``):

* ``"all"`` (**our default**): ``v = 1`` for every joint, because the teacher has an opinion
  about every joint - including the ones the annotator did not label, which is exactly the
  extra information distillation adds;
* ``"target"``: ``v = w``, the ground-truth target weights, as FPD-style code does (its
  teacher term is the same ``JointsMSELoss(use_target_weight=True)`` as the GT term): joints
  without a label contribute nothing to either term.

An explicit ``teacher_weight`` argument overrides both. The target weights ``w`` always
apply to the ground-truth term.

Scale: the KL term lives on a different scale than the MSE terms (a heatmap MSE is ~1e-3,
a KL between peaked maps is ~1); ``alpha`` does not rebalance that for you. Gaussian
heatmaps peak at 1, so ``softmax(T)`` over 64 x 48 pixels is almost flat at ``tau = 1``; a
temperature below 1 (e.g. 0.1) sharpens both distributions (and ``tau^2`` scales the term down).

The teacher's heatmaps are detached: no gradient ever reaches the teacher.
"""
from __future__ import annotations

import torch
from torch import nn
from torch.nn import functional as F

from ikd_edu.distill.ground_truth import _full, check_heatmaps, check_target_weight, joints_mse
from ikd_edu.exercise_guard import reference

__all__ = ["LogitDistillation", "heatmap_kl"]

MODES = ("mse", "kl")
#: ``teacher_weighting``: "all" (v = 1, default) or "target" (v = w, FPD-style code).
TEACHER_WEIGHTINGS = ("all", "target")


def heatmap_kl(student: torch.Tensor, teacher: torch.Tensor, temperature: float = 1.0,
               weight: torch.Tensor | None = None) -> torch.Tensor:
    """``tau^2 * mean_{n,k} v_nk KL(softmax(T_nk / tau) || softmax(S_nk / tau))`` over the h*w pixels.

    ``student``/``teacher`` ``(N, K, h, w)``; ``weight`` ``v`` ``(N, K)`` or ``None`` (= 1).
    """
    tau = float(temperature)
    n, k = student.shape[:2]
    log_p_s = F.log_softmax(_full(student).reshape(n, k, -1) / tau, dim=-1)  # (N, K, h*w)
    log_p_t = F.log_softmax(_full(teacher).reshape(n, k, -1) / tau, dim=-1)
    kl = (log_p_t.exp() * (log_p_t - log_p_s)).sum(-1)  # (N, K)
    if weight is not None:
        kl = kl * _full(weight)
    return tau * tau * kl.mean()


class LogitDistillation(nn.Module):
    """``L = (1 - alpha) L_gt(S, G) + alpha L_kd(S, T)``; see the module docstring for ``L_kd``.

    Args:
        alpha: share of the teacher term, in [0, 1] (FPD uses 0.5). ``alpha=0`` is plain GT training.
        mode: ``"mse"`` (0.5 x weighted MSE to the teacher's heatmaps, FPD) or ``"kl"``
            (spatial-softmax KL per joint with temperature, Hinton-style).
        temperature: ``tau`` for ``mode="kl"`` (ignored by ``"mse"``).
        teacher_weighting: ``"all"`` (default; ``v = 1``: the teacher term counts every joint)
            or ``"target"`` (``v = w``: the target weights also weight the teacher term, as
            FPD-style code does); see the module docstring.

    ``forward(S, T, G, w, teacher_weight=None) -> scalar`` (the mixed loss);
    ``parts(...) -> {"gt": (1 - alpha) L_gt, "logit": alpha L_kd}`` (weighted, they sum to forward).
    """

    def __init__(self, alpha: float = 0.5, mode: str = "mse", temperature: float = 1.0,
                 teacher_weighting: str = "all") -> None:
        super().__init__()
        if mode not in MODES:
            raise ValueError(f"unknown logit distillation mode {mode!r}; choose one of {', '.join(MODES)}")
        if teacher_weighting not in TEACHER_WEIGHTINGS:
            raise ValueError(f"unknown teacher_weighting {teacher_weighting!r}; choose one of "
                             f"{', '.join(TEACHER_WEIGHTINGS)} (all: v = 1, target: v = the target weights)")
        self.teacher_weighting = teacher_weighting
        if not 0.0 <= alpha <= 1.0:
            raise ValueError(f"alpha={alpha} is outside [0, 1]; it is the teacher term's share (FPD uses 0.5)")
        if temperature <= 0:
            raise ValueError(f"temperature={temperature} must be > 0 (1.0 = plain softmax)")
        self.alpha = float(alpha)
        self.mode = mode
        self.temperature = float(temperature)

    @reference
    def distill_term(self, student: torch.Tensor, teacher: torch.Tensor,
                     teacher_weight: torch.Tensor | None = None) -> torch.Tensor:
        """The unweighted teacher term ``L_kd(S, T)`` (teacher detached)."""
        check_heatmaps(student, teacher, "teacher")
        if teacher_weight is not None:
            teacher_weight = check_target_weight(student, teacher_weight)
        teacher = teacher.detach()
        if self.mode == "mse":
            return joints_mse(student, teacher, teacher_weight)
        return heatmap_kl(student, teacher, self.temperature, teacher_weight)

    @reference
    def parts(self, student: torch.Tensor, teacher: torch.Tensor, target: torch.Tensor, target_weight: torch.Tensor,
              teacher_weight: torch.Tensor | None = None, alpha: float | None = None) -> dict[str, torch.Tensor]:
        """``{"gt": (1 - alpha) L_gt(S, G), "logit": alpha L_kd(S, T)}``.

        ``alpha`` overrides ``self.alpha`` for this call (used by a decay schedule).
        ``teacher_weight`` ``v`` ``(N, K)``; ``None`` follows ``self.teacher_weighting``.
        """
        a = self.alpha if alpha is None else alpha  # a float, or a tensor (a decayed share: no host sync)
        check_heatmaps(student, target, "ground-truth")
        target_weight = check_target_weight(student, target_weight)
        gt = joints_mse(student, target, target_weight)
        if teacher_weight is None and self.teacher_weighting == "target":
            teacher_weight = target_weight
        kd = self.distill_term(student, teacher, teacher_weight)
        return {"gt": (1.0 - a) * gt, "logit": a * kd}

    @reference
    def forward(self, student: torch.Tensor, teacher: torch.Tensor, target: torch.Tensor, target_weight: torch.Tensor,
                teacher_weight: torch.Tensor | None = None) -> torch.Tensor:
        parts = self.parts(student, teacher, target, target_weight, teacher_weight)
        return parts["gt"] + parts["logit"]

    def extra_repr(self) -> str:
        return (f"alpha={self.alpha}, mode={self.mode!r}, temperature={self.temperature}, "
                f"teacher_weighting={self.teacher_weighting!r}")
