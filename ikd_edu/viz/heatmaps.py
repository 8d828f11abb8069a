"""Heatmaps: one joint or all of them, on the crop, teacher next to student.

Axes: **K** joints, **h x w** heatmap, **H x W** crop (``H = 4 h`` for SimpleBaseline).
Heatmap pixel ``(i, j)`` has its centre at crop pixel ``(s_y i, s_x j)`` with the stride
``s = (H / h, W / w)`` (the codec's convention: a crop point ``u`` lands at ``u / s``), so a
heatmap laid over the crop spans ``[-s/2, (w - 1/2) s]`` horizontally - not ``[0, W]``.

Which map is shown (:func:`heatmap_view`): ``joint=None`` (or ``"all"``) shows the maximum
over the K joints (every joint at once); an int or a joint name shows that channel.
The difference panel is always **student - teacher**, in a diverging colour map centred at
0 (red: the student puts more mass there than the teacher, blue: less).
"""
from __future__ import annotations

import math

import numpy as np
from matplotlib.colors import Normalize
from matplotlib.figure import Figure

from ikd_edu.skeleton import COCO, Skeleton
from ikd_edu.viz.skeleton import as_display_image, hide_ticks, joint_label, new_figure, to_numpy

__all__ = ["heatmap_view", "heatmap_extent", "plot_heatmap_overlay", "plot_joint_heatmaps", "plot_teacher_student",
           "HEATMAP_CMAP", "DIFF_CMAP"]

HEATMAP_CMAP = "magma"
DIFF_CMAP = "RdBu_r"


def _check_heatmaps(heatmaps, name: str = "heatmaps") -> np.ndarray:
    arr = to_numpy(heatmaps, np.float32)
    if arr.ndim == 4 and arr.shape[0] == 1:
        arr = arr[0]
    if arr.ndim != 3:
        raise ValueError(f"{name} must be (K, h, w) for one instance; got shape {arr.shape}. "
                         "Index one instance of a batch first, e.g. heatmaps[0].")
    return arr


def resolve_joint(joint, skeleton: Skeleton, num_joints: int) -> int | None:
    """``None``/``"all"`` -> None (max over joints); a joint index or name -> the index."""
    if joint is None or (isinstance(joint, str) and joint.lower() in ("all", "max")):
        return None
    if isinstance(joint, str):
        if joint not in skeleton.joints:
            raise ValueError(f"unknown joint {joint!r}; choose one of {list(skeleton.joints)} or 'all'")
        index = skeleton.joints.index(joint)
    else:
        index = int(joint)
    if not 0 <= index < num_joints:
        raise ValueError(f"joint {joint!r} is out of range: the heatmaps have {num_joints} joints (0..{num_joints - 1})")
    return index


def heatmap_view(heatmaps, joint=None, skeleton: Skeleton = COCO) -> np.ndarray:
    """The ``(h, w)`` map that is displayed: one joint's channel, or the max over the K joints.

    Args:
        heatmaps: ``(K, h, w)``.
        joint: None / ``"all"`` (max projection), an index, or a joint name.
    """
    hm = _check_heatmaps(heatmaps)
    index = resolve_joint(joint, skeleton, hm.shape[0])
    return hm.max(axis=0) if index is None else hm[index]


def _view_title(joint, skeleton: Skeleton, num_joints: int) -> str:
    index = resolve_joint(joint, skeleton, num_joints)
    if index is None:
        return "all joints (max)"
    return joint_label(skeleton, index) if num_joints == skeleton.num_joints else f"joint {index}"


def heatmap_extent(heatmap_hw: tuple[int, int], image_hw: tuple[int, int] | None) -> tuple[float, float, float, float]:
    """``imshow`` extent (left, right, bottom, top) that puts heatmap pixel centres on their crop pixels."""
    h, w = heatmap_hw
    if image_hw is None:
        return (-0.5, w - 0.5, h - 0.5, -0.5)
    sy, sx = image_hw[0] / h, image_hw[1] / w
    return (-0.5 * sx, (w - 0.5) * sx, (h - 0.5) * sy, -0.5 * sy)


def _draw_map(ax, data: np.ndarray, image, alpha: float, norm, cmap: str):
    """Image in grey (if any) with the map on top; returns the map's AxesImage."""
    if image is not None:
        img = as_display_image(image)
        grey = img.mean(axis=-1)
        ax.imshow(grey, cmap="gray", vmin=0.0, vmax=1.0, interpolation="nearest")
        extent = heatmap_extent(data.shape, img.shape[:2])
        shown = ax.imshow(data, cmap=cmap, norm=norm, alpha=alpha, extent=extent, interpolation="bilinear")
        ax.set_xlim(-0.5, img.shape[1] - 0.5)
        ax.set_ylim(img.shape[0] - 0.5, -0.5)
    else:
        shown = ax.imshow(data, cmap=cmap, norm=norm, interpolation="nearest")
    hide_ticks(ax)
    return shown


def plot_heatmap_overlay(image, heatmaps, joint=None, alpha: float = 0.6, skeleton: Skeleton = COCO,
                         title: str | None = None, cmap: str = HEATMAP_CMAP, panel_size: float = 3.5) -> Figure:
    """One heatmap laid over its crop.

    Args:
        image: the crop ``(3, H, W)`` (normalised or not) / ``(H, W, 3)``, or None for the
            bare heatmap.
        heatmaps: ``(K, h, w)``.
        joint: None (max over all joints), an index or a joint name.
        alpha: opacity of the heatmap over the (grey) image.

    Returns:
        a Figure: one image Axes and its colour bar.
    """
    hm = _check_heatmaps(heatmaps)
    data = heatmap_view(hm, joint, skeleton)
    fig, axes = new_figure(1, 1, panel_size=panel_size)
    ax = axes[0, 0]
    shown = _draw_map(ax, data, image, alpha if image is not None else 1.0,
                      Normalize(min(0.0, float(data.min())), max(float(data.max()), 1e-6)), cmap)
    fig.colorbar(shown, ax=ax, shrink=0.8)
    ax.set_title(title or _view_title(joint, skeleton, hm.shape[0]), fontsize=9)
    return fig


def plot_joint_heatmaps(heatmaps, skeleton: Skeleton = COCO, image=None, ncols: int = 6, shared_scale: bool = True,
                        cmap: str = HEATMAP_CMAP, panel_size: float = 1.8) -> Figure:
    """Every joint's heatmap in a grid, titled with the joint name in its side colour.

    Args:
        heatmaps: ``(K, h, w)``.
        image: optional crop to show under every map.
        shared_scale: one colour scale for all joints (compare confidences); False scales
            each map to its own maximum (see the shape of weak maps).

    Returns:
        a Figure with exactly K Axes (unused grid cells removed).
    """
    hm = _check_heatmaps(heatmaps)
    k = hm.shape[0]
    ncols = max(1, min(int(ncols), k))
    nrows = math.ceil(k / ncols)
    fig, axes = new_figure(nrows, ncols, panel_size=panel_size)
    flat = axes.reshape(-1)
    vmax = max(float(hm.max()), 1e-6)
    colours = skeleton.joint_colours() if k == skeleton.num_joints else [(0, 0, 0)] * k
    for j in range(k):
        top = vmax if shared_scale else max(float(hm[j].max()), 1e-6)
        _draw_map(flat[j], hm[j], image, 0.7, Normalize(min(0.0, float(hm[j].min())), top), cmap)
        name = joint_label(skeleton, j) if k == skeleton.num_joints else f"joint {j}"
        flat[j].set_title(f"{name} ({float(hm[j].max()):.2f})", fontsize=7, color=colours[j])
    for ax in flat[k:]:
        fig.delaxes(ax)
    return fig


def plot_teacher_student(image, teacher_heatmaps, student_heatmaps, joint=None, skeleton: Skeleton = COCO,
                         alpha: float = 0.65, panel_size: float = 3.0, titles=("teacher", "student")) -> Figure:
    """Teacher | student | difference (student - teacher) for one joint or all joints.

    Teacher and student share one colour scale (so brighter means more confident); the
    difference uses a diverging map centred at 0 with its own colour bar.

    Args:
        image: the crop (or None).
        teacher_heatmaps, student_heatmaps: ``(K, h, w)`` each, same shape.
        joint: None (max over joints), an index or a joint name.

    Returns:
        a Figure with 3 panel Axes (teacher, student, difference) plus 2 colour bars.
        ``fig.axes[i].images[-1].get_array()`` is the displayed map of panel ``i``.
    """
    t = _check_heatmaps(teacher_heatmaps, "teacher_heatmaps")
    s = _check_heatmaps(student_heatmaps, "student_heatmaps")
    if t.shape != s.shape:
        raise ValueError(f"teacher heatmaps {t.shape} and student heatmaps {s.shape} differ; "
                         "run both models on the same crops with the same number of joints")
    t_view, s_view = heatmap_view(t, joint, skeleton), heatmap_view(s, joint, skeleton)
    diff = s_view - t_view
    fig, axes = new_figure(1, 3, panel_size=panel_size)
    top = max(float(t_view.max()), float(s_view.max()), 1e-6)
    low = min(0.0, float(t_view.min()), float(s_view.min()))
    norm = Normalize(low, top)
    a = _draw_map(axes[0, 0], t_view, image, alpha, norm, HEATMAP_CMAP)
    _draw_map(axes[0, 1], s_view, image, alpha, norm, HEATMAP_CMAP)
    m = max(float(np.abs(diff).max()), 1e-6)
    d = _draw_map(axes[0, 2], diff, None, 1.0, Normalize(-m, m), DIFF_CMAP)
    if image is not None:  # keep the difference panel in crop pixels like the others
        img_hw = as_display_image(image).shape[:2]
        d.set_extent(heatmap_extent(diff.shape, img_hw))
        axes[0, 2].set_xlim(-0.5, img_hw[1] - 0.5)
        axes[0, 2].set_ylim(img_hw[0] - 0.5, -0.5)
    fig.colorbar(a, ax=axes[0, :2].tolist(), shrink=0.8)
    fig.colorbar(d, ax=axes[0, 2], shrink=0.8)
    view = _view_title(joint, skeleton, t.shape[0])
    axes[0, 0].set_title(f"{titles[0]}: {view}", fontsize=9)
    axes[0, 1].set_title(f"{titles[1]}: {view}", fontsize=9)
    axes[0, 2].set_title(f"{titles[1]} - {titles[0]}", fontsize=9)  # "student - teacher" by default
    return fig
