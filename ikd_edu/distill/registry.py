"""The one table of distillation terms: what each term is, needs, weighs and is called.

Every place that lists terms reads this table: the config (``distill.terms``, the weights'
defaults and checks), :class:`~ikd_edu.distill.integral.IntegralKD` (which modules to
build, which taps to ask for, which weighted parts to return), the engine (which config
key to lower when a term blows up), the ablation and the quickstart (one variant per term).

A term is a *part* of the loss, one key of ``IntegralKD``'s output and one column of
``metrics.csv``. Parts can share a user-facing name (``group``): ``--distill structure``
switches on ``affinity`` and ``relation``, which share one ``StructureDistillation`` module.

Adding a term = one module with its loss + one :func:`register_term` call + its test::

    register_term(Term(
        name="toy", build=lambda opts: ToyLoss(), loss=lambda mod, x, w: {"toy": w * mod(x.student_heatmaps)},
        weight_key=None, default_weight=0.1, display="toy term"))

``loss(module, inputs, weight) -> {part name: weighted scalar}`` gets the effective
weight ``w d`` (decay applied) and a :class:`TermInputs`; a term that ``shares_gt`` (the
logit term) also returns the ``gt`` part: ``(1 - w d) L_gt``.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Callable

from ikd_edu._table import Table

__all__ = ["Term", "TermInputs", "register_term", "unregister_term", "registered_term", "terms", "get_term",
           "part_names", "user_terms", "parts_of", "variant_terms", "weight_key", "default_weight"]


@dataclass
class TermInputs:
    """What a term's loss may read: taps by name, the target heatmaps ``G (N, K, h, w)`` and weights ``w (N, K)``."""

    student_taps: dict
    teacher_taps: dict
    target: Any
    target_weight: Any
    student_heatmaps: Any  # S (N, K, h, w), checked against the target
    options: dict = field(default_factory=dict)  # IntegralKD's keyword arguments (taps, modes, ...)
    get_student: Callable[[str], Any] = field(repr=False, default=None)
    get_teacher: Callable[[str], Any] = field(repr=False, default=None)

    def student(self, name: str):
        """Student tap ``name`` (a clear error when it was not computed)."""
        return self.get_student(name)

    def teacher(self, name: str):
        """Teacher tap ``name`` (a clear error when it was not computed)."""
        return self.get_teacher(name)


def _none(options: dict) -> tuple[str, ...]:
    return ()


@dataclass(frozen=True)
class Term:
    """One distillation term (a part of the loss).

    Attributes:
        name: loss key and ``metrics.csv`` column (``"feature"``).
        build: ``options -> nn.Module`` (IntegralKD's keyword arguments as a dict); called
            once per ``module`` attribute.
        loss: ``(module, TermInputs, weight) -> {name: weighted loss}``.
        weight_key: config key of the weight (``"distill.feature_weight"``); None = fixed at
            ``default_weight``. Its last part is IntegralKD's keyword (``feature_weight``).
        default_weight: the default of that key (the config's default reads it).
        student_taps, teacher_taps: ``options -> tap names`` the term reads.
        display: name in tables and help texts.
        group: the user-facing term it belongs to (``"structure"``); "" = its own name.
        module: IntegralKD attribute of its module (state-dict prefix; shared by a group); "" = name.
        shares_gt: its weight is taken from the ground-truth term (logit KD: ``(1 - a) L_gt + a L_kd``).
        weight_max: upper bound of the weight (a share: 1.0), None = any value >= 0.
        variant: a single-term variant of its group in the ablation and the quickstart.
    """

    name: str
    build: Callable[[dict], Any]
    loss: Callable[[Any, TermInputs, float], dict]
    weight_key: str | None
    default_weight: float
    student_taps: Callable[[dict], tuple[str, ...]] = _none
    teacher_taps: Callable[[dict], tuple[str, ...]] = _none
    display: str = ""
    group: str = ""
    module: str = ""
    shares_gt: bool = False
    weight_max: float | None = None
    variant: bool = True

    @property
    def user_name(self) -> str:
        return self.group or self.name

    @property
    def module_attr(self) -> str:
        return self.module or self.name

    @property
    def weight_arg(self) -> str:
        """IntegralKD's keyword for the weight: the last part of ``weight_key`` (or ``<name>_weight``)."""
        return self.weight_key.rsplit(".", 1)[-1] if self.weight_key else f"{self.name}_weight"


_TERMS = Table("distillation term")


def register_term(term: Term) -> Term:
    """Add ``term`` to the table (after the others: that is its report order)."""
    if term.name in {t.group for t in _TERMS.values() if t.group}:
        raise ValueError(f"distillation term {term.name!r} is already registered")
    if term.name in ("gt", "total", "all", "ikd", "none", "labels"):
        raise ValueError(f"{term.name!r} is a reserved name, not a distillation term")
    return _TERMS.add(term.name, term)


def unregister_term(name: str) -> None:
    _TERMS.pop(name)


def registered_term(term: Term):
    """``with registered_term(Term(...)):`` the term exists inside the block only (tests)."""
    return _TERMS.temporarily(term.name, term, register_term)


def terms() -> tuple[Term, ...]:
    """Every registered part, in report order."""
    return tuple(_TERMS.values())


def get_term(name: str) -> Term:
    return _TERMS[name]


def part_names() -> tuple[str, ...]:
    """``("logit", "feature", "affinity", "relation", ...)``: loss keys in report order."""
    return tuple(_TERMS)


def user_terms() -> tuple[str, ...]:
    """``("logit", "feature", "structure", ...)``: what ``distill.terms`` / ``--distill`` accept."""
    return tuple(dict.fromkeys(t.user_name for t in _TERMS.values()))


def parts_of(user_name: str) -> tuple[str, ...]:
    """The parts a user-facing term switches on (``structure`` -> affinity, relation)."""
    return tuple(t.name for t in _TERMS.values() if t.user_name == user_name)


def variant_terms() -> tuple[str, ...]:
    """User-facing terms with a single-term variant in the ablation and the quickstart."""
    return tuple(dict.fromkeys(t.user_name for t in _TERMS.values() if t.variant))


def weight_key(name: str) -> str | None:
    """Config key of a part's or user-facing term's weight (a group: its first part's); None if unknown."""
    for t in _TERMS.values():
        if name in (t.name, t.group):
            return t.weight_key
    return None


def default_weight(name: str) -> float:
    return _TERMS[name].default_weight


# --------------------------------------------------------------------------------------
# The built-in terms
# --------------------------------------------------------------------------------------
def _build_logit(o: dict):
    from ikd_edu.distill.logit import LogitDistillation

    return LogitDistillation(o["alpha"], o["logit_mode"], o["temperature"], o["logit_teacher_weighting"])


def _logit_loss(module, x: TermInputs, weight: float) -> dict:
    return module.parts(x.student_heatmaps, x.teacher("heatmaps"), x.target, x.target_weight, alpha=weight)


def _build_feature(o: dict):
    from ikd_edu.distill.feature import FeatureDistillation

    if o["feature_mode"] == "l2" and not (o["student_channels"] and o["teacher_channels"]):
        raise ValueError(
            "the feature term needs student_channels and teacher_channels (of feature_tap) for its 1x1 adapter; "
            "build with IntegralKD.for_models(student, teacher, ...) to read them from the models, pass them, "
            "or use feature_mode='attention'."
        )
    return FeatureDistillation(o["student_channels"], o["teacher_channels"], o["use_bn"], o["feature_mode"], o["align"])


def _feature_loss(module, x: TermInputs, weight: float) -> dict:
    tap = x.options["feature_tap"]
    return {"feature": weight * module(x.student(tap), x.teacher(tap))}


def _build_structure(o: dict):
    from ikd_edu.distill.structure import StructureDistillation

    return StructureDistillation(o["pool"])  # unit weights inside: IntegralKD applies gamma, delta and the decay


def _affinity_loss(module, x: TermInputs, weight: float) -> dict:
    tap = x.options["structure_tap"]
    return {"affinity": weight * module.affinity_term(x.student(tap), x.teacher(tap))}


def _relation_loss(module, x: TermInputs, weight: float) -> dict:
    return {"relation": weight * module.relation_term(x.student_heatmaps, x.teacher("heatmaps"))}


register_term(Term("logit", _build_logit, _logit_loss, "distill.alpha", 0.5,
                   teacher_taps=lambda o: ("heatmaps",), display="logit KD (FPD)", shares_gt=True, weight_max=1.0))
register_term(Term("feature", _build_feature, _feature_loss, "distill.feature_weight", 1e-3,
                   student_taps=lambda o: (o["feature_tap"],), teacher_taps=lambda o: (o["feature_tap"],),
                   display="feature KD"))
register_term(Term("affinity", _build_structure, _affinity_loss, "distill.affinity_weight", 1e-2,
                   student_taps=lambda o: (o["structure_tap"],), teacher_taps=lambda o: (o["structure_tap"],),
                   display="structure: pairwise affinity", group="structure", module="structure"))
register_term(Term("relation", _build_structure, _relation_loss, "distill.relation_weight", 1e-2,
                   teacher_taps=lambda o: ("heatmaps",), display="structure: joint relations", group="structure",
                   module="structure"))
