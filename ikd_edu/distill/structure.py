"""Structure distillation: the student must carry the teacher's *relations*, not just its values.

Two relation matrices, both cosine similarities (so they ignore the overall scale of a
network's activations and compare only "what goes with what"):

**Pairwise affinity between positions** (structured KD, Liu et al., CVPR 2019). Average-pool
the features ``F`` ``(N, C, H, W)`` to a grid of ``H' x W'`` cells (``P = H' * W'``
positions), take the channel vector ``f_i`` (length ``C``) at every position ``i``, and

    A_ij = f_i . f_j / ( |f_i| |f_j| )          A: (N, P, P), A_ii = 1, A_ij in [-1, 1]

    L_aff = mean_n  sum_{i,j} ( A^T_ij - A^S_ij )^2 / P^2

Student and teacher may have different channel counts (``A`` is ``P x P`` either way) - no
adapter needed. A zero vector (a dead position after ReLU) has affinity 0 to everything
(``eps`` keeps the division safe).

**Relations between joints** on the heatmaps ``S`` / ``T`` ``(N, K, h, w)``: flatten each
joint's heatmap to a vector of ``h * w`` pixels and take

    R_kl = <S_k, S_l> / ( |S_k| |S_l| )          R: (N, K, K)

    L_rel = mean_n  sum_{k,l} ( R^T_kl - R^S_kl )^2 / K^2

``R_kl`` is large when joints ``k`` and ``l`` light up the same pixels (left/right wrist
confusion, a blurry elbow-wrist pair); it is the K x K "relations between joints".

**Pooling** (``pool``): the affinity costs ``O(P^2 C)`` time and ``O(P^2)`` memory per
instance, so large maps are pooled first. ``pool="auto"`` (the default) pools to at most
``AUTO_GRID = (16, 12)`` cells: at 256x192 input ``layer4`` (8 x 6, P = 48) is used as is,
``deconv1`` (16 x 12) as is, ``deconv2``/``deconv3`` (32 x 24 / 64 x 48) are averaged over
2x2 / 4x4 windows to 16 x 12 (P = 192). ``pool=None`` never pools; ``pool=(ph, pw)`` pools to
at most ``ph x pw`` cells (``adaptive_avg_pool2d``; maps that are already smaller are kept).
"""
from __future__ import annotations

import torch
from torch import nn
from torch.nn import functional as F

from ikd_edu.distill.ground_truth import _full, check_heatmaps
from ikd_edu.exercise_guard import reference

__all__ = [
    "AUTO_GRID", "pooled_grid_size", "pool_features", "pairwise_affinity", "affinity_at", "joint_relations",
    "affinity_loss", "relation_loss", "StructureDistillation",
]

#: ``pool="auto"``: the largest grid (H', W') the affinity is computed on.
AUTO_GRID: tuple[int, int] = (16, 12)
EPS = 1e-12



def _shape(t: torch.Tensor) -> str:
    return "(" + ", ".join(str(s) for s in t.shape) + ")"


def pooled_grid_size(size: tuple[int, int], pool="auto") -> tuple[int, int]:
    """The grid ``(H', W')`` that a ``(H, W)`` map is pooled to for ``pool`` (None, "auto" or (ph, pw))."""
    h, w = int(size[0]), int(size[1])
    if pool is None:
        return h, w
    if isinstance(pool, str):
        if pool != "auto":
            raise ValueError(f"pool={pool!r}: use None (no pooling), 'auto' (at most {AUTO_GRID}) or a grid (ph, pw)")
        pool = AUTO_GRID
    try:
        ph, pw = (int(v) for v in pool)
    except (TypeError, ValueError):
        raise ValueError(f"pool={pool!r}: use None, 'auto' or a grid (ph, pw) of two positive ints") from None
    if ph < 1 or pw < 1:
        raise ValueError(f"pool={pool!r}: the grid sizes must be positive")
    return min(h, ph), min(w, pw)


def pool_features(features: torch.Tensor, pool="auto") -> torch.Tensor:
    """Average-pool ``(N, C, H, W)`` to ``(N, C, H', W')`` (``pooled_grid_size``); a no-op if nothing to pool."""
    _check_features(features)
    grid = pooled_grid_size(features.shape[-2:], pool)
    if grid == tuple(features.shape[-2:]):
        return features
    return F.adaptive_avg_pool2d(features, grid)


def _check_features(features: torch.Tensor, name: str = "features") -> None:
    if features.dim() != 4:
        raise ValueError(f"{name} must be 4-D (N, C, H, W); got {_shape(features)}. "
                         "Pass a feature map from model.forward_taps (add a batch axis with .unsqueeze(0)).")


@reference
def _unit_position_vectors(features: torch.Tensor, pool) -> tuple[torch.Tensor, tuple[int, int]]:
    """Pool, then L2-normalise the channel vector at every position: ``(N, P, C)`` and the grid."""
    pooled = _full(pool_features(features, pool))  # (N, C, H', W')
    grid = tuple(pooled.shape[-2:])
    vectors = pooled.flatten(2).transpose(1, 2)  # (N, P, C)
    return F.normalize(vectors, dim=-1, eps=EPS), grid


@reference
def pairwise_affinity(features: torch.Tensor, pool="auto") -> torch.Tensor:
    """``A_ij = f_i . f_j / (|f_i| |f_j|)`` between all positions: ``(N, C, H, W) -> (N, P, P)``.

    ``P = H' * W'`` after pooling (see the module docstring); positions are in row-major order
    (``i = y * W' + x``). Invariant to scaling the features, also per position when
    ``pool=None`` (pooling mixes neighbouring positions before normalising).
    """
    unit, _ = _unit_position_vectors(features, pool)  # (N, P, C)
    return unit @ unit.transpose(1, 2)  # (N, P, P)


@reference
def affinity_at(features: torch.Tensor, query_yx: tuple[int, int], pool="auto") -> torch.Tensor:
    """One row of the affinity as a map: ``A_{q, (y, x)}`` for the query cell ``q``, ``(N, H', W')``.

    ``query_yx = (y, x)`` is a cell of the *pooled* grid (``pooled_grid_size``); the result
    equals ``pairwise_affinity(features, pool)[:, y * W' + x].reshape(N, H', W')`` but costs
    only ``O(P C)``.
    """
    unit, (gh, gw) = _unit_position_vectors(features, pool)  # (N, P, C)
    y, x = (int(v) for v in query_yx)
    if not (0 <= y < gh and 0 <= x < gw):
        raise ValueError(f"query_yx={tuple(query_yx)} is outside the {gh} x {gw} grid of the pooled features "
                         f"(features {_shape(features)}, pool={pool!r}); pick 0 <= y < {gh}, 0 <= x < {gw}.")
    query = unit[:, y * gw + x, :]  # (N, C)
    return (unit @ query.unsqueeze(-1)).reshape(-1, gh, gw)  # (N, H', W')


@reference
def joint_relations(heatmaps: torch.Tensor) -> torch.Tensor:
    """``R_kl = <H_k, H_l> / (|H_k| |H_l|)`` between flattened joint heatmaps: ``(N, K, h, w) -> (N, K, K)``."""
    if heatmaps.dim() != 4:
        raise ValueError(f"heatmaps must be 4-D (N, K, h, w); got {_shape(heatmaps)}.")
    unit = F.normalize(_full(heatmaps).flatten(2), dim=-1, eps=EPS)  # (N, K, h*w)
    return unit @ unit.transpose(1, 2)  # (N, K, K)


def affinity_loss(student_affinity: torch.Tensor, teacher_affinity: torch.Tensor) -> torch.Tensor:
    """``mean_n sum_ij (A^T_ij - A^S_ij)^2 / P^2`` for ``(N, P, P)`` affinities (teacher detached)."""
    if student_affinity.shape != teacher_affinity.shape:
        raise ValueError(f"student affinity {_shape(student_affinity)} and teacher affinity "
                         f"{_shape(teacher_affinity)} differ; pool both feature maps to the same grid.")
    return (teacher_affinity.detach() - student_affinity).pow(2).mean()  # mean over (n, i, j) = mean_n sum / P^2


def relation_loss(student_relations: torch.Tensor, teacher_relations: torch.Tensor) -> torch.Tensor:
    """``mean_n sum_kl (R^T_kl - R^S_kl)^2 / K^2`` for ``(N, K, K)`` relations (teacher detached)."""
    if student_relations.shape != teacher_relations.shape:
        raise ValueError(f"student joint relations {_shape(student_relations)} and teacher joint relations "
                         f"{_shape(teacher_relations)} differ; both models must predict the same K joints.")
    return (teacher_relations.detach() - student_relations).pow(2).mean()


class StructureDistillation(nn.Module):
    """``affinity_weight * L_aff(F_s, F_t) + relation_weight * L_rel(S, T)`` (module docstring).

    Args:
        pool: pooling for the affinity (None, ``"auto"`` = at most 16 x 12 cells, or (ph, pw)).
            If student and teacher maps differ in size, both are pooled to the smaller grid.
        affinity_weight, relation_weight: the weights of the two parts.

    ``forward(student_features=None, teacher_features=None, student_heatmaps=None,
    teacher_heatmaps=None) -> {"affinity": weighted L_aff, "relation": weighted L_rel}``;
    a part whose inputs are not given is left out of the dict. Teacher inputs are detached.
    """

    def __init__(self, pool="auto", affinity_weight: float = 1.0, relation_weight: float = 1.0) -> None:
        super().__init__()
        pooled_grid_size((1, 1), pool)  # validate early
        self.pool = pool
        self.affinity_weight = float(affinity_weight)
        self.relation_weight = float(relation_weight)

    def affinity_term(self, student_features: torch.Tensor, teacher_features: torch.Tensor) -> torch.Tensor:
        """Unweighted ``L_aff``; maps of different sizes are pooled to a common grid first."""
        _check_features(student_features, "student features")
        _check_features(teacher_features, "teacher features")
        if student_features.shape[0] != teacher_features.shape[0]:
            raise ValueError(f"student features {_shape(student_features)} and teacher features "
                             f"{_shape(teacher_features)} have different batch sizes; run both on the same batch.")
        hs, ws = pooled_grid_size(student_features.shape[-2:], self.pool)
        ht, wt = pooled_grid_size(teacher_features.shape[-2:], self.pool)
        grid = (min(hs, ht), min(ws, wt))
        a_s = pairwise_affinity(student_features, grid)
        with torch.no_grad():
            a_t = pairwise_affinity(teacher_features.detach(), grid)
        return affinity_loss(a_s, a_t)

    def relation_term(self, student_heatmaps: torch.Tensor, teacher_heatmaps: torch.Tensor) -> torch.Tensor:
        """Unweighted ``L_rel``."""
        check_heatmaps(student_heatmaps, teacher_heatmaps, "teacher")
        with torch.no_grad():
            r_t = joint_relations(teacher_heatmaps.detach())
        return relation_loss(joint_relations(student_heatmaps), r_t)

    @reference
    def forward(self, student_features: torch.Tensor | None = None, teacher_features: torch.Tensor | None = None,
                student_heatmaps: torch.Tensor | None = None,
                teacher_heatmaps: torch.Tensor | None = None) -> dict[str, torch.Tensor]:
        parts: dict[str, torch.Tensor] = {}
        if (student_features is None) != (teacher_features is None):
            raise ValueError("pass both student_features and teacher_features (or neither) for the affinity term")
        if (student_heatmaps is None) != (teacher_heatmaps is None):
            raise ValueError("pass both student_heatmaps and teacher_heatmaps (or neither) for the relation term")
        if student_features is not None:
            parts["affinity"] = self.affinity_weight * self.affinity_term(student_features, teacher_features)
        if student_heatmaps is not None:
            parts["relation"] = self.relation_weight * self.relation_term(student_heatmaps, teacher_heatmaps)
        return parts

    def extra_repr(self) -> str:
        return f"pool={self.pool!r}, affinity_weight={self.affinity_weight}, relation_weight={self.relation_weight}"
