"""Integral Knowledge Distillation: the weighted sum of every term, in one module.

With ``S``/``T``/``G`` student/teacher/ground-truth heatmaps, ``w`` target weights, ``F_s``/``F_t``
student/teacher features and ``d = d(progress)`` the decay factor:

    L = (1 - alpha d) L_gt(S, G) + alpha d L_kd(S, T)          logit      (logit.py)
        + beta  d L_feat(phi(F_s), F_t)                         feature    (feature.py)
        + gamma d L_aff(A^S, A^T)                               affinity   (structure.py)
        + delta d L_rel(R^S, R^T)                               relation   (structure.py)

(without the logit term the first line is just ``L_gt``). ``forward`` returns every *weighted*
part and their sum, so a training loop logs exactly what it optimises::

    >>> kd = IntegralKD.for_models(student, teacher)          # channels from the models
    >>> s = student.forward_taps(x, kd.required_taps)
    >>> with torch.no_grad():
    ...     t = teacher.forward_taps(x, kd.required_teacher_taps)
    >>> losses = kd(s, t, target, target_weight, progress=epoch / epochs)
    >>> losses["total"].backward()           # keys: gt, logit, feature, affinity, relation, total

The feature adapter ``phi`` lives in this module: give ``kd.parameters()`` to the optimiser
together with the student's and call ``kd.train()`` / ``kd.eval()`` with it.

**Default weights are ours.** The paper's weights and layers are not available; the defaults
are the ones a CPU prototype on the synthetic data used (``alpha = 0.5`` as in FPD,
``beta = 1e-3`` on ``layer4`` through a 1x1 adapter with BN, ``gamma = 1e-2`` affinity on
``layer4``, ``delta = 1e-2`` joint relations on the heatmaps). They roughly balance the
terms' magnitudes against ``L_gt`` (~1e-3) at the start of training; tune them with the
ablation, and expect different values on COCO.

**Decay** (DWPose-style, optional): every distillation weight is multiplied by
``d(progress)``, ``progress`` in [0, 1] the fraction of training done:
``"none"`` d = 1, ``"linear"`` d = 1 - progress, ``"cosine"`` d = (1 + cos(pi progress)) / 2.
At the end of training the student then learns from the labels alone.
"""
from __future__ import annotations

import math

import torch
from torch import nn

from ikd_edu.distill.feature import FeatureDistillation
from ikd_edu.distill.ground_truth import check_heatmaps, check_target_weight, joints_mse
from ikd_edu.distill.logit import LogitDistillation
from ikd_edu.distill.structure import StructureDistillation
from ikd_edu.exercise_guard import reference
from ikd_edu.models.simple_baseline import TAP_NAMES

__all__ = ["IntegralKD", "decay_factor", "TERMS", "DECAYS"]

#: The distillation parts, in the order they are reported. ``"structure"`` = affinity + relation.
TERMS: tuple[str, ...] = ("logit", "feature", "affinity", "relation")
TERM_ALIASES: dict[str, tuple[str, ...]] = {"structure": ("affinity", "relation")}
DECAYS: tuple[str, ...] = ("none", "linear", "cosine")


@reference  # notebook 06's exercise: switched off while a check runs the learner's code
def decay_factor(progress: float, schedule: str = "none") -> float:
    """``d(progress)``: 1 (``"none"``), ``1 - p`` (``"linear"``) or ``(1 + cos(pi p)) / 2`` (``"cosine"``)."""
    if schedule not in DECAYS:
        raise ValueError(f"unknown decay {schedule!r}; choose one of {', '.join(DECAYS)}")
    p = float(progress)
    if not 0.0 <= p <= 1.0:
        raise ValueError(f"progress={progress} must be in [0, 1] (the fraction of training done, e.g. epoch / epochs)")
    if schedule == "linear":
        return 1.0 - p
    if schedule == "cosine":
        return 0.5 * (1.0 + math.cos(math.pi * p))
    return 1.0


def _expand_terms(terms) -> tuple[str, ...]:
    if isinstance(terms, str):
        terms = [t for t in terms.replace("+", ",").split(",") if t.strip()]
    wanted: set[str] = set()
    for term in terms or ():
        term = term.strip()
        if term in TERM_ALIASES:
            wanted.update(TERM_ALIASES[term])
        elif term in TERMS:
            wanted.add(term)
        else:
            raise ValueError(f"unknown distillation term {term!r}; choose from "
                             f"{', '.join(TERMS + tuple(TERM_ALIASES))} ('structure' = affinity + relation)")
    return tuple(t for t in TERMS if t in wanted)


def _ordered(names: set[str]) -> tuple[str, ...]:
    return tuple(sorted(names, key=lambda n: TAP_NAMES.index(n) if n in TAP_NAMES else len(TAP_NAMES)))


class IntegralKD(nn.Module):
    """The IKD objective: ground truth + logit + feature + structure terms (module docstring).

    Args:
        terms: any of ``"logit"``, ``"feature"``, ``"structure"`` (= ``"affinity"`` +
            ``"relation"``), or the two structure parts alone; a list or ``"logit,feature"``.
            Empty = plain ground-truth training.
        alpha: logit share ``alpha`` (FPD: 0.5).
        feature_weight, affinity_weight, relation_weight: ``beta``, ``gamma``, ``delta``.
        student_channels, teacher_channels: channels of ``feature_tap`` (needed for the "l2"
            feature adapter; :meth:`for_models` reads them from the models).
        feature_tap: tap for the feature term (``layer4``: the last trunk stage, as DWPose).
        structure_tap: tap for the affinity (``layer4``: 8 x 6 at 256 x 192, no pooling needed).
        logit_mode, temperature: see :class:`LogitDistillation`.
        logit_teacher_weighting: ``"all"`` (default: every joint weight 1 in the teacher term)
            or ``"target"`` (the target weights ``w`` also weight it, FPD-style); see
            :class:`LogitDistillation`.
        weight_teacher_term: older spelling; True means ``logit_teacher_weighting="target"``.
        feature_mode, use_bn, align: see :class:`FeatureDistillation`.
        pool: affinity pooling, see :mod:`ikd_edu.distill.structure` (``"auto"``: at most 16 x 12).
        decay: ``"none"``, ``"linear"`` or ``"cosine"`` decay of all distillation weights.
    """

    def __init__(self, terms=("logit", "feature", "structure"), alpha: float = 0.5, feature_weight: float = 1e-3,
                 affinity_weight: float = 1e-2, relation_weight: float = 1e-2, student_channels: int | None = None,
                 teacher_channels: int | None = None, feature_tap: str = "layer4", structure_tap: str = "layer4",
                 logit_mode: str = "mse", temperature: float = 1.0, weight_teacher_term: bool = False,
                 logit_teacher_weighting: str = "all",
                 feature_mode: str = "l2", use_bn: bool = True, align: str = "interpolate", pool="auto",
                 decay: str = "none") -> None:
        super().__init__()
        self.terms = _expand_terms(terms)
        decay_factor(0.0, decay)  # validate
        self.decay = decay
        self.alpha = float(alpha)
        self.feature_weight = float(feature_weight)
        self.affinity_weight = float(affinity_weight)
        self.relation_weight = float(relation_weight)
        self.feature_tap, self.structure_tap = feature_tap, structure_tap
        if weight_teacher_term:
            logit_teacher_weighting = "target"
        self.logit_teacher_weighting = logit_teacher_weighting
        self.weight_teacher_term = logit_teacher_weighting == "target"
        if "feature" in self.terms and feature_mode == "l2" and not (student_channels and teacher_channels):
            raise ValueError(
                "the feature term needs student_channels and teacher_channels (of feature_tap) for its 1x1 adapter; "
                "build with IntegralKD.for_models(student, teacher, ...) to read them from the models, pass them, "
                "or use feature_mode='attention'."
            )
        self.logit = (LogitDistillation(alpha, logit_mode, temperature, logit_teacher_weighting)
                      if "logit" in self.terms else None)
        self.feature = (FeatureDistillation(student_channels, teacher_channels, use_bn, feature_mode, align)
                        if "feature" in self.terms else None)
        # Unit weights inside: IntegralKD applies gamma, delta and the decay itself.
        self.structure = StructureDistillation(pool) if {"affinity", "relation"} & set(self.terms) else None

    @classmethod
    def for_models(cls, student: nn.Module, teacher: nn.Module, **kwargs) -> "IntegralKD":
        """Build with ``student_channels`` / ``teacher_channels`` read from ``model.tap_channels(feature_tap)``."""
        tap = kwargs.get("feature_tap", "layer4")
        kwargs.setdefault("student_channels", student.tap_channels(tap))
        kwargs.setdefault("teacher_channels", teacher.tap_channels(tap))
        return cls(**kwargs)

    # ---------------------------------------------------------------- taps the engine asks for
    @property
    def required_taps(self) -> tuple[str, ...]:
        """Student taps ``forward`` needs (network order); always includes ``"heatmaps"``."""
        names = {"heatmaps"}
        if "feature" in self.terms:
            names.add(self.feature_tap)
        if "affinity" in self.terms:
            names.add(self.structure_tap)
        return _ordered(names)

    @property
    def required_teacher_taps(self) -> tuple[str, ...]:
        """Teacher taps ``forward`` needs (network order); empty = no teacher forward needed."""
        names: set[str] = set()
        if {"logit", "relation"} & set(self.terms):
            names.add("heatmaps")
        if "feature" in self.terms:
            names.add(self.feature_tap)
        if "affinity" in self.terms:
            names.add(self.structure_tap)
        return _ordered(names)

    def current_weights(self, progress: float = 0.0) -> dict[str, float]:
        """The effective weights at ``progress`` (after decay), e.g. for logging or a plot."""
        d = decay_factor(progress, self.decay)
        weights = {"gt": 1.0 - (self.alpha * d if "logit" in self.terms else 0.0)}
        full = {"logit": self.alpha, "feature": self.feature_weight, "affinity": self.affinity_weight,
                "relation": self.relation_weight}
        weights.update({t: full[t] * d for t in self.terms})
        return weights

    # ---------------------------------------------------------------- the loss
    @staticmethod
    def _tap(taps: dict, name: str, who: str, attr: str) -> torch.Tensor:
        if name not in taps:
            raise ValueError(f"{who} taps lack {name!r} (got {', '.join(map(repr, taps)) or 'none'}); run the "
                             f"{who} with model.forward_taps(x, kd.{attr}).")
        return taps[name]

    def forward(self, student_taps: dict[str, torch.Tensor], teacher_taps: dict[str, torch.Tensor] | None,
                target: torch.Tensor, target_weight: torch.Tensor, progress: float = 0.0) -> dict[str, torch.Tensor]:
        """``{"gt", <one key per term>, "total"}``, every value a weighted scalar; ``total`` is their sum.

        ``student_taps``/``teacher_taps``: dicts from ``forward_taps`` holding
        ``required_taps``/``required_teacher_taps``; ``target`` ``G`` ``(N, K, h, w)``,
        ``target_weight`` ``w`` ``(N, K)``, ``progress`` in [0, 1] for the decay.
        """
        d = decay_factor(progress, self.decay)
        student_hm = self._tap(student_taps, "heatmaps", "student", "required_taps")  # S (N, K, h, w)
        check_heatmaps(student_hm, target, "ground-truth")
        target_weight = check_target_weight(student_hm, target_weight)
        teacher_taps = teacher_taps or {}

        def teacher(name: str) -> torch.Tensor:
            return self._tap(teacher_taps, name, "teacher", "required_teacher_taps")

        losses: dict[str, torch.Tensor] = {}
        if self.logit is not None:
            losses.update(self.logit.parts(student_hm, teacher("heatmaps"), target, target_weight,
                                           alpha=self.alpha * d))
        else:
            losses["gt"] = joints_mse(student_hm, target, target_weight)
        if self.feature is not None:
            f_s = self._tap(student_taps, self.feature_tap, "student", "required_taps")
            losses["feature"] = self.feature_weight * d * self.feature(f_s, teacher(self.feature_tap))
        if "affinity" in self.terms:
            f_s = self._tap(student_taps, self.structure_tap, "student", "required_taps")
            losses["affinity"] = self.affinity_weight * d * self.structure.affinity_term(f_s, teacher(self.structure_tap))
        if "relation" in self.terms:
            losses["relation"] = self.relation_weight * d * self.structure.relation_term(student_hm, teacher("heatmaps"))
        losses["total"] = sum(losses.values())
        return losses

    def extra_repr(self) -> str:
        return (f"terms={self.terms}, alpha={self.alpha}, feature_weight={self.feature_weight}, "
                f"affinity_weight={self.affinity_weight}, relation_weight={self.relation_weight}, "
                f"feature_tap={self.feature_tap!r}, structure_tap={self.structure_tap!r}, decay={self.decay!r}")
