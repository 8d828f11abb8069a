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

from ikd_edu.distill import registry
from ikd_edu.distill.ground_truth import check_heatmaps, check_target_weight, joints_mse
from ikd_edu.exercise_guard import reference
from ikd_edu.models.simple_baseline import TAP_NAMES

__all__ = ["IntegralKD", "decay_factor", "TERMS", "DECAYS"]

#: The built-in distillation parts, in the order they are reported. ``"structure"`` = affinity + relation.
#: (A snapshot at import: the live table is :mod:`ikd_edu.distill.registry`.)
TERMS: tuple[str, ...] = registry.part_names()
DECAYS: tuple[str, ...] = ("none", "linear", "cosine")


@reference  # notebook 06's exercise: switched off while a check runs the learner's code
def decay_factor(progress, schedule: str = "none"):
    """``d(progress)``: 1 (``"none"``), ``1 - p`` (``"linear"``) or ``(1 + cos(pi p)) / 2`` (``"cosine"``).

    ``progress`` is a float, or a 0-d tensor (a compiled training loop passes one on the device): then
    ``d`` is a tensor too, computed without reading ``p`` back to the host, and a compiled loss
    takes it as an input instead of specialising on each new value (torch 2.4-2.5 specialise
    Python floats: every step would recompile, up to the recompile limit of 8).
    """
    if schedule not in DECAYS:
        raise ValueError(f"unknown decay {schedule!r}; choose one of {', '.join(DECAYS)}")
    if isinstance(progress, torch.Tensor):  # no range check: it would sync with the device
        if schedule == "linear":
            return 1.0 - progress
        if schedule == "cosine":
            return 0.5 * (1.0 + torch.cos(math.pi * progress))
        return 1.0
    p = float(progress)
    if not 0.0 <= p <= 1.0:
        raise ValueError(f"progress={progress} must be in [0, 1] (the fraction of training done, e.g. epoch / epochs)")
    if schedule == "linear":
        return 1.0 - p
    if schedule == "cosine":
        return 0.5 * (1.0 + math.cos(math.pi * p))
    return 1.0


def _expand_terms(terms) -> tuple[str, ...]:
    """User-facing or part names (``"logit,structure"``) -> registered parts in report order."""
    if isinstance(terms, str):
        terms = [t for t in terms.replace("+", ",").split(",") if t.strip()]
    parts = registry.part_names()
    aliases = {u: registry.parts_of(u) for u in registry.user_terms() if registry.parts_of(u) != (u,)}
    wanted: set[str] = set()
    for term in terms or ():
        term = term.strip()
        if term in aliases:
            wanted.update(aliases[term])
        elif term in parts:
            wanted.add(term)
        else:
            said = "; ".join(f"'{a}' = {' + '.join(p)}" for a, p in aliases.items())
            raise ValueError(f"unknown distillation term {term!r}; choose from "
                             f"{', '.join(parts + tuple(aliases))} ({said})")
    return tuple(t for t in parts if t in wanted)


def _ordered(names: set[str]) -> tuple[str, ...]:
    return tuple(sorted(names, key=lambda n: TAP_NAMES.index(n) if n in TAP_NAMES else len(TAP_NAMES)))


class IntegralKD(nn.Module):
    """The IKD objective: ground truth + logit + feature + structure terms (module docstring).

    Args:
        terms: any of ``"logit"``, ``"feature"``, ``"structure"`` (= ``"affinity"`` +
            ``"relation"``), or the two structure parts alone; a list or ``"logit,feature"``.
            Empty = plain ground-truth training.
        alpha: logit share ``alpha`` (FPD: 0.5).
        feature_weight, affinity_weight, relation_weight: ``beta``, ``gamma``, ``delta``; None =
            the default of :mod:`ikd_edu.distill.registry` (so are ``**weights``: the weights
            of other registered terms, by their ``weight_arg``, e.g. ``toy_weight=0.1``).
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

    def __init__(self, terms=("logit", "feature", "structure"), alpha: float | None = None,
                 feature_weight: float | None = None, affinity_weight: float | None = None,
                 relation_weight: float | None = None, student_channels: int | None = None,
                 teacher_channels: int | None = None, feature_tap: str = "layer4", structure_tap: str = "layer4",
                 logit_mode: str = "mse", temperature: float = 1.0, weight_teacher_term: bool = False,
                 logit_teacher_weighting: str = "all",
                 feature_mode: str = "l2", use_bn: bool = True, align: str = "interpolate", pool="auto",
                 decay: str = "none", **weights) -> None:
        super().__init__()
        self.terms = _expand_terms(terms)
        decay_factor(0.0, decay)  # validate
        self.decay = decay
        weights.update(alpha=alpha, feature_weight=feature_weight, affinity_weight=affinity_weight,
                       relation_weight=relation_weight)
        known = {t.weight_arg for t in registry.terms()}
        unknown = sorted(set(weights) - known)
        if unknown:
            raise TypeError(f"IntegralKD got unexpected keyword arguments {', '.join(unknown)} (term weights: "
                            f"{', '.join(sorted(known))})")
        #: part name -> full weight (before decay); None = the registry's default
        self.weights: dict[str, float] = {}
        for t in registry.terms():
            value = weights.get(t.weight_arg)
            self.weights[t.name] = float(t.default_weight if value is None else value)
            setattr(self, t.weight_arg, self.weights[t.name])  # kd.alpha, kd.feature_weight, ...
        self.feature_tap, self.structure_tap = feature_tap, structure_tap
        if weight_teacher_term:
            logit_teacher_weighting = "target"
        self.logit_teacher_weighting = logit_teacher_weighting
        self.weight_teacher_term = logit_teacher_weighting == "target"
        self.options = dict({t.weight_arg: self.weights[t.name] for t in registry.terms()},
                            student_channels=student_channels, teacher_channels=teacher_channels,
                            feature_tap=feature_tap, structure_tap=structure_tap, logit_mode=logit_mode, temperature=temperature,
                            logit_teacher_weighting=logit_teacher_weighting, feature_mode=feature_mode,
                            use_bn=use_bn, align=align, pool=pool)
        # one module per attribute (kd.logit, kd.feature, kd.structure: the state-dict prefixes), built in
        # report order; a term that is off leaves its attribute None
        for t in registry.terms():
            if t.name in self.terms and getattr(self, t.module_attr, None) is None:
                setattr(self, t.module_attr, t.build(self.options))
            elif not hasattr(self, t.module_attr):
                setattr(self, t.module_attr, None)

    @classmethod
    def for_models(cls, student: nn.Module, teacher: nn.Module, **kwargs) -> "IntegralKD":
        """Build with ``student_channels`` / ``teacher_channels`` read from ``model.tap_channels(feature_tap)``."""
        tap = kwargs.get("feature_tap", "layer4")
        kwargs.setdefault("student_channels", student.tap_channels(tap))
        kwargs.setdefault("teacher_channels", teacher.tap_channels(tap))
        return cls(**kwargs)

    # ---------------------------------------------------------------- taps the engine asks for
    def _active(self) -> list[registry.Term]:
        return [t for t in registry.terms() if t.name in self.terms]

    @property
    def required_taps(self) -> tuple[str, ...]:
        """Student taps ``forward`` needs (network order); always includes ``"heatmaps"``."""
        names = {"heatmaps"}
        for t in self._active():
            names.update(t.student_taps(self.options))
        return _ordered(names)

    @property
    def required_teacher_taps(self) -> tuple[str, ...]:
        """Teacher taps ``forward`` needs (network order); empty = no teacher forward needed."""
        names: set[str] = set()
        for t in self._active():
            names.update(t.teacher_taps(self.options))
        return _ordered(names)

    def current_weights(self, progress: float = 0.0) -> dict[str, float]:
        """The effective weights at ``progress`` (after decay), e.g. for logging or a plot."""
        d = decay_factor(progress, self.decay)
        active = self._active()
        weights = {"gt": 1.0 - sum(self.weights[t.name] * d for t in active if t.shares_gt)}
        weights.update({t.name: self.weights[t.name] * d for t in active})
        return weights

    # ---------------------------------------------------------------- the loss
    @staticmethod
    def _tap(taps: dict, name: str, who: str, attr: str) -> torch.Tensor:
        if name not in taps:
            raise ValueError(f"{who} taps lack {name!r} (got {', '.join(map(repr, taps)) or 'none'}); run the "
                             f"{who} with model.forward_taps(x, kd.{attr}).")
        return taps[name]

    def forward(self, student_taps: dict[str, torch.Tensor], teacher_taps: dict[str, torch.Tensor] | None,
                target: torch.Tensor, target_weight: torch.Tensor, progress=0.0) -> dict[str, torch.Tensor]:
        """``{"gt", <one key per term>, "total"}``, every value a weighted scalar; ``total`` is their sum.

        ``student_taps``/``teacher_taps``: dicts from ``forward_taps`` holding
        ``required_taps``/``required_teacher_taps``; ``target`` ``G`` ``(N, K, h, w)``,
        ``target_weight`` ``w`` ``(N, K)``, ``progress`` in [0, 1] for the decay (a float or a 0-d tensor).
        """
        d = decay_factor(progress, self.decay)
        student_hm = self._tap(student_taps, "heatmaps", "student", "required_taps")  # S (N, K, h, w)
        check_heatmaps(student_hm, target, "ground-truth")
        target_weight = check_target_weight(student_hm, target_weight)
        teacher_taps = teacher_taps or {}

        def teacher(name: str) -> torch.Tensor:
            return self._tap(teacher_taps, name, "teacher", "required_teacher_taps")

        inputs = registry.TermInputs(
            student_taps, teacher_taps, target, target_weight, student_hm, self.options,
            get_student=lambda name: self._tap(student_taps, name, "student", "required_taps"), get_teacher=teacher)
        active = self._active()
        losses: dict[str, torch.Tensor] = {}
        if not any(t.shares_gt for t in active):  # a term that shares gt returns the "gt" part itself
            losses["gt"] = joints_mse(student_hm, target, target_weight)
        for t in active:
            losses.update(t.loss(getattr(self, t.module_attr), inputs, self.weights[t.name] * d))
        losses["total"] = sum(losses.values())
        return losses

    def extra_repr(self) -> str:
        weights = ", ".join(f"{t.weight_arg}={self.weights[t.name]}" for t in registry.terms())
        return (f"terms={self.terms}, {weights}, "
                f"feature_tap={self.feature_tap!r}, structure_tap={self.structure_tap!r}, decay={self.decay!r}")
