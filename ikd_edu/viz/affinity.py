"""Structure, seen: the affinity of one position to all others, and the relations between joints.

Nothing here computes a relation itself: the numbers come from
:mod:`ikd_edu.distill.structure` - :func:`~ikd_edu.distill.structure.affinity_at` (one row
``A_q,:`` of the pairwise affinity ``A_ij = f_i . f_j / (|f_i| |f_j|)``, shown as a map over
the pooled grid) and :func:`~ikd_edu.distill.structure.joint_relations` (``R_kl``, the cosine
similarity of joint heatmaps k and l) - so a figure shows exactly what the structure
distillation loss compares.

Axes: **C** channels, **H x W** feature map, **H' x W'** the pooled grid the affinity lives on
(``pool="auto"``: at most 16 x 12 cells), **K** joints. Differences are **student - teacher**
in a diverging colour map centred at 0.
"""
from __future__ import annotations

import numpy as np
import torch
from matplotlib.colors import Normalize
from matplotlib.figure import Figure
from matplotlib.patches import Rectangle

from ikd_edu.distill.structure import affinity_at, joint_relations, pooled_grid_size
from ikd_edu.skeleton import COCO, Skeleton
from ikd_edu.viz.heatmaps import DIFF_CMAP
from ikd_edu.viz.skeleton import as_display_image, hide_ticks, joint_label, new_figure

__all__ = ["common_grid", "affinity_maps", "plot_affinity", "relation_matrices", "plot_joint_relations",
           "AFFINITY_CMAP"]

AFFINITY_CMAP = "viridis"


def _batch1(x, name: str, what: str = "(C, H, W)") -> torch.Tensor:
    t = x.detach().cpu().float() if isinstance(x, torch.Tensor) else torch.as_tensor(np.asarray(x), dtype=torch.float32)
    if t.dim() == 3:
        t = t.unsqueeze(0)
    if t.dim() != 4 or t.shape[0] != 1:
        raise ValueError(f"{name} must be {what} for one instance (or a batch of 1); got shape {tuple(t.shape)}")
    return t


def common_grid(teacher_features, student_features, pool="auto"):
    """The pooled grid both maps are compared on and the ``pool`` argument that gives it.

    Same-size maps use ``pool`` as given; otherwise both are pooled to the smaller grid
    (as :class:`~ikd_edu.distill.structure.StructureDistillation` does).
    Returns ``((H', W'), pool_to_use)``.
    """
    t, s = _batch1(teacher_features, "teacher_features"), _batch1(student_features, "student_features")
    gt, gs = pooled_grid_size(t.shape[-2:], pool), pooled_grid_size(s.shape[-2:], pool)
    if gt == gs:
        return gt, pool
    grid = (min(gt[0], gs[0]), min(gt[1], gs[1]))
    return grid, grid


def affinity_maps(teacher_features, student_features, query_yx, pool="auto") -> dict:
    """Teacher and student affinity of the query cell to every cell, and their difference.

    Args:
        teacher_features: ``(C_t, H, W)``; student_features: ``(C_s, H, W)`` (channel counts
            may differ; sizes too - then both are pooled to the smaller grid).
        query_yx: ``(y, x)`` cell of the pooled grid.
        pool: as in :func:`ikd_edu.distill.structure.pairwise_affinity`.

    Returns:
        ``{"teacher": (H', W'), "student": (H', W'), "difference": student - teacher,
        "grid": (H', W'), "query_yx": (y, x), "pool": pool used}`` (numpy arrays).
    """
    t, s = _batch1(teacher_features, "teacher_features"), _batch1(student_features, "student_features")
    grid, pool_used = common_grid(t, s, pool)
    with torch.no_grad():
        a_t = affinity_at(t, query_yx, pool_used)[0].numpy()  # (H', W')
        a_s = affinity_at(s, query_yx, pool_used)[0].numpy()
    return {"teacher": a_t, "student": a_s, "difference": a_s - a_t, "grid": grid,
            "query_yx": (int(query_yx[0]), int(query_yx[1])), "pool": pool_used}


def plot_affinity(image, teacher_features, student_features, query_yx, pool="auto", panel_size: float = 2.8,
                  titles=("teacher", "student")) -> Figure:
    """Where does the network think "this position goes with that one"? Teacher vs student.

    Panels: [the crop with the pooled grid and the query cell] | teacher affinity map |
    student affinity map | student - teacher. The query cell is marked with a white star
    (its affinity to itself is 1).

    Args:
        image: the crop (any form :func:`~ikd_edu.viz.skeleton.as_display_image` takes) or None.
        teacher_features, student_features: ``(C, H, W)`` each (e.g. the ``layer4`` taps).
        query_yx: ``(y, x)`` cell of the pooled grid (see :func:`affinity_maps`).
        pool: pooling of the affinity (``"auto"``, None or ``(ph, pw)``).

    Returns:
        a Figure with 3 panel Axes (4 with ``image``) plus 2 colour bars;
        ``panel.images[-1].get_array()`` is exactly ``affinity_at(...)`` for teacher/student.
    """
    maps = affinity_maps(teacher_features, student_features, query_yx, pool)
    gh, gw = maps["grid"]
    qy, qx = maps["query_yx"]
    n_panels = 3 + (image is not None)
    fig, axes = new_figure(1, n_panels, panel_size=panel_size, aspect=gh / gw)
    axes = list(axes[0])
    if image is not None:
        img = as_display_image(image)
        h, w = img.shape[:2]
        ax = axes.pop(0)
        ax.imshow(img, interpolation="nearest")
        cy, cx = h / gh, w / gw  # cell size in crop pixels
        for i in range(1, gh):
            ax.axhline(i * cy - 0.5, color="white", lw=0.3, alpha=0.5)
        for j in range(1, gw):
            ax.axvline(j * cx - 0.5, color="white", lw=0.3, alpha=0.5)
        ax.add_patch(Rectangle((qx * cx - 0.5, qy * cy - 0.5), cx, cy, fill=False, ec="red", lw=1.8))
        ax.set_xlim(-0.5, w - 0.5)
        ax.set_ylim(h - 0.5, -0.5)
        ax.set_title(f"query cell (y={qy}, x={qx}) of {gh}x{gw}", fontsize=8)
        hide_ticks(ax)
    shown, diff = _teacher_student_difference(axes, maps, titles, "affinity to query", fontsize=8)
    for ax in axes:
        ax.plot([qx], [qy], marker="*", ms=10, mfc="white", mec="black", mew=0.7, ls="none")
        hide_ticks(ax)
    fig.colorbar(shown, ax=axes[:2], shrink=0.8)
    fig.colorbar(diff, ax=axes[2], shrink=0.8)
    return fig


def _teacher_student_difference(axes, maps: dict, titles, what: str, fontsize: float):
    """Draw ``maps["teacher"]``, ``maps["student"]`` (shared scale from min(0, lowest) to 1) and
    ``maps["difference"]`` (symmetric scale) on ``axes[:3]``; the two images for the colour bars."""
    low = min(0.0, float(maps["teacher"].min()), float(maps["student"].min()))
    norm = Normalize(low, 1.0)
    shown = None
    for ax, key, name in zip(axes[:2], ("teacher", "student"), titles):
        shown = ax.imshow(maps[key], cmap=AFFINITY_CMAP, norm=norm, interpolation="nearest")
        ax.set_title(f"{name}: {what}", fontsize=fontsize)
    m = max(float(np.abs(maps["difference"]).max()), 1e-6)
    diff = axes[2].imshow(maps["difference"], cmap=DIFF_CMAP, norm=Normalize(-m, m), interpolation="nearest")
    axes[2].set_title("student - teacher", fontsize=fontsize)
    return shown, diff


def relation_matrices(teacher_heatmaps, student_heatmaps) -> dict:
    """``{"teacher": (K, K), "student": (K, K), "difference": student - teacher}`` from ``joint_relations``."""
    t = _batch1(teacher_heatmaps, "teacher_heatmaps", "(K, h, w)")
    s = _batch1(student_heatmaps, "student_heatmaps", "(K, h, w)")
    if t.shape != s.shape:
        raise ValueError(f"teacher heatmaps {tuple(t.shape[1:])} and student heatmaps {tuple(s.shape[1:])} differ; "
                         "run both models on the same crop with the same number of joints")
    with torch.no_grad():
        r_t, r_s = joint_relations(t)[0].numpy(), joint_relations(s)[0].numpy()
    return {"teacher": r_t, "student": r_s, "difference": r_s - r_t}


def plot_joint_relations(teacher_heatmaps, student_heatmaps, skeleton: Skeleton = COCO,
                         panel_size: float = 3.6, titles=("teacher", "student")) -> Figure:
    """The K x K joint relations ``R_kl`` of teacher and student, and their difference.

    Args:
        teacher_heatmaps, student_heatmaps: ``(K, h, w)`` each.
        skeleton: for the tick labels (joint names coloured by side).

    Returns:
        a Figure with 3 matrix Axes (teacher, student, student - teacher) plus 2 colour bars.
    """
    mats = relation_matrices(teacher_heatmaps, student_heatmaps)
    k = mats["teacher"].shape[0]
    if k == skeleton.num_joints:
        labels, colours = [joint_label(skeleton, j) for j in range(k)], skeleton.joint_colours()
    else:
        labels, colours = [str(j) for j in range(k)], [(0, 0, 0)] * k
    fig, axes = new_figure(1, 3, panel_size=panel_size)
    axes = list(axes[0])
    shown, diff = _teacher_student_difference(axes, mats, titles, "joint relations R", fontsize=9)
    for i, ax in enumerate(axes):
        ax.set_xticks(range(k))
        ax.set_xticklabels(labels, rotation=90, fontsize=6)
        ax.set_yticks(range(k))
        ax.set_yticklabels(labels if i == 0 else [], fontsize=6)
        for tick, colour in zip(ax.get_xticklabels(), colours):
            tick.set_color(colour)
        for tick, colour in zip(ax.get_yticklabels(), colours):
            tick.set_color(colour)
    fig.colorbar(shown, ax=axes[:2], shrink=0.7)
    fig.colorbar(diff, ax=axes[2], shrink=0.7)
    return fig
