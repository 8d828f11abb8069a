"""Draw people: skeletons on images, with COCO visibility taken seriously.

Conventions (the same as the synthetic sample figure and the FiftyOne browser):

* colours come from :mod:`ikd_edu.skeleton`: left joints/limbs blue, right orange, centre
  green - never re-typed here;
* ``v = 2`` (visible) joints are filled dots, ``v = 1`` (labelled but occluded) joints are
  **hollow** circles, and limbs touching an occluded joint are dashed;
* ``v = 0`` (not labelled) joints are **not drawn**, and neither is any limb that ends at
  one. COCO stores such joints at ``(0, 0)``; drawing them is the classic "lines to the
  top-left corner" bug.

Axes: **P** people, **K** joints, **H x W** image. Keypoints are ``(x, y)`` in image pixels
with pixel centres at integer coordinates.

Every ``plot_*`` function returns a :class:`matplotlib.figure.Figure` created without
pyplot (nothing is shown or kept alive behind your back; in Jupyter the returned figure is
displayed once). :func:`draw_pose` draws into an ``Axes`` you own.
"""
from __future__ import annotations

import math
from typing import Sequence

import numpy as np
from matplotlib.axes import Axes
from matplotlib.collections import LineCollection
from matplotlib.figure import Figure
from matplotlib.patches import Rectangle

from ikd_edu.skeleton import COCO, Skeleton

__all__ = ["to_numpy", "as_display_image", "new_figure", "draw_pose", "plot_image_with_poses", "pose_gallery"]


# --------------------------------------------------------------------------- helpers (shared by viz/*)
def to_numpy(x, dtype=None) -> np.ndarray:
    """A torch tensor (any device, any dtype, with or without grad) or array-like -> numpy array."""
    if hasattr(x, "detach"):
        x = x.detach().cpu()
        if str(x.dtype) in ("torch.bfloat16", "torch.float16"):
            x = x.float()
        x = x.numpy()
    arr = np.asarray(x)
    return arr.astype(dtype) if dtype is not None else arr


def as_display_image(image, normalized: bool | None = None) -> np.ndarray:
    """Any image we pass around -> ``(H, W, 3)`` float array in 0..1 for ``imshow``.

    Accepts ``(H, W, 3)`` uint8 (as loaded), ``(H, W, 3)`` / ``(3, H, W)`` float in 0..1, a
    ``(3, H, W)`` float crop **normalised** with the ImageNet mean/std (as the datasets
    return it: it is denormalised), a leading batch axis of 1, or ``(H, W)`` grey.

    Args:
        normalized: True/False to say whether a float image is ImageNet-normalised; None
            guesses: a float image with values outside ``[0, 1]`` is treated as normalised.
    """
    from ikd_edu.data.transforms import IMAGENET_MEAN, IMAGENET_STD

    arr = to_numpy(image)
    if arr.ndim == 4 and arr.shape[0] == 1:
        arr = arr[0]
    if arr.ndim == 2:
        arr = np.repeat(arr[..., None], 3, axis=-1)
    if arr.ndim != 3:
        raise ValueError(f"image must be (H, W, 3), (3, H, W) or (H, W); got shape {arr.shape}")
    if arr.shape[0] in (1, 3) and arr.shape[-1] not in (1, 3):
        arr = np.moveaxis(arr, 0, -1)  # (3, H, W) -> (H, W, 3)
    if arr.shape[-1] == 1:
        arr = np.repeat(arr, 3, axis=-1)
    if arr.shape[-1] != 3:
        raise ValueError(f"image must have 3 colour channels; got shape {arr.shape}")
    if arr.dtype == np.uint8:
        return arr.astype(np.float32) / 255.0
    arr = arr.astype(np.float32)
    if normalized is None:
        normalized = bool(arr.size) and (float(arr.min()) < 0.0 or float(arr.max()) > 1.0)
        if normalized and float(arr.max()) > 3.0 and float(arr.min()) >= 0.0:
            return np.clip(arr / 255.0, 0.0, 1.0)  # a float image in 0..255
    if normalized:
        arr = arr * np.asarray(IMAGENET_STD, np.float32) + np.asarray(IMAGENET_MEAN, np.float32)
    return np.clip(arr, 0.0, 1.0)


def new_figure(nrows: int = 1, ncols: int = 1, panel_size: float = 3.0, aspect: float = 1.0, **kwargs):
    """A pyplot-free ``Figure`` with an ``nrows x ncols`` grid of axes: ``(fig, axes (nrows, ncols))``."""
    fig = Figure(figsize=(panel_size * ncols, panel_size * aspect * nrows), layout="constrained")
    axes = fig.subplots(nrows, ncols, squeeze=False, **kwargs)
    return fig, axes


def hide_ticks(ax: Axes) -> None:
    ax.set_xticks([])
    ax.set_yticks([])


def joint_label(skeleton: Skeleton, joint: int) -> str:
    """Short joint name for titles and ticks: ``left_wrist`` -> ``L wrist``, ``r_ankle`` -> ``R ankle``."""
    name = skeleton.joints[joint]
    for prefix, short in (("left_", "L "), ("right_", "R "), ("l_", "L "), ("r_", "R ")):
        if name.startswith(prefix):
            return short + name[len(prefix):]
    return name


# --------------------------------------------------------------------------- poses
def _split_keypoints(keypoints, visibility, num_joints: int) -> tuple[np.ndarray, np.ndarray]:
    """``(K, 2|3)`` (+ optional ``(K,)`` visibility) -> ``xy (K, 2)`` float, ``v (K,)`` int."""
    kp = to_numpy(keypoints, np.float64)
    if kp.ndim != 2 or kp.shape[1] not in (2, 3):
        raise ValueError(f"keypoints must be (K, 2) or (K, 3) (x, y[, v]); got shape {kp.shape}")
    if kp.shape[0] != num_joints:
        raise ValueError(f"keypoints have {kp.shape[0]} joints but the skeleton has {num_joints}; "
                         "pass the matching skeleton (ikd_edu.skeleton.COCO or MPII)")
    if visibility is not None:
        v = to_numpy(visibility, np.float64).reshape(-1)
        if v.shape[0] != num_joints:
            raise ValueError(f"visibility must have {num_joints} entries; got {v.shape[0]}")
    elif kp.shape[1] == 3:
        v = kp[:, 2]
    else:
        v = np.full(num_joints, 2.0)
    xy = kp[:, :2]
    v = np.where(np.isfinite(xy).all(axis=1), np.rint(v), 0).astype(np.int64)  # NaN coords: missing
    return xy, v


def draw_pose(
    ax: Axes,
    keypoints,
    visibility=None,
    skeleton: Skeleton = COCO,
    marker_size: float = 25.0,
    linewidth: float = 1.8,
    alpha: float = 1.0,
    edge_colour=None,
    zorder: float = 3.0,
) -> dict:
    """Draw one person's skeleton into ``ax``.

    Args:
        keypoints: ``(K, 2)`` ``(x, y)`` or ``(K, 3)`` ``(x, y, v)`` in the pixels of whatever
            ``ax`` shows (tensor or array).
        visibility: ``(K,)`` COCO visibility 0/1/2 (overrides a third column). Without
            either, every joint is drawn as visible. NaN coordinates count as ``v = 0``.
        skeleton: joint layout (edges and colours).
        marker_size: scatter marker area (points^2).
        edge_colour: one colour for every limb and marker (e.g. to tell two models apart);
            default: the skeleton's side colours.

    Returns:
        ``{"limbs": LineCollection, "visible": PathCollection, "occluded": PathCollection}``:
        limbs only between labelled joints (solid when both ends are visible, dashed when an
        end is occluded), filled markers for ``v = 2``, hollow markers for ``v = 1``; joints
        with ``v = 0`` appear nowhere.
    """
    xy, v = _split_keypoints(keypoints, visibility, skeleton.num_joints)
    joint_colours = np.asarray(skeleton.joint_colours())
    limb_colours = np.asarray(skeleton.edge_colours())
    if edge_colour is not None:
        from matplotlib.colors import to_rgb

        joint_colours = np.tile(to_rgb(edge_colour), (skeleton.num_joints, 1))
        limb_colours = np.tile(to_rgb(edge_colour), (len(skeleton.edges), 1))

    edges = np.asarray(skeleton.edges, dtype=np.int64).reshape(-1, 2)  # (E, 2)
    keep = (v[edges[:, 0]] > 0) & (v[edges[:, 1]] > 0)  # never draw to an unlabelled joint
    segments = xy[edges[keep]]  # (E', 2, 2)
    solid = (v[edges[keep]] == 2).all(axis=1)
    limbs = LineCollection(
        list(segments), colors=limb_colours[keep], linewidths=linewidth, alpha=alpha, zorder=zorder,
        linestyles=["solid" if s else (0, (2.0, 1.5)) for s in solid], capstyle="round",
    )
    ax.add_collection(limbs, autolim=False)

    vis, occ = v == 2, v == 1
    visible = ax.scatter(xy[vis, 0], xy[vis, 1], s=marker_size, c=joint_colours[vis], edgecolors="white",
                         linewidths=0.6, alpha=alpha, zorder=zorder + 1)
    occluded = ax.scatter(xy[occ, 0], xy[occ, 1], s=marker_size * 1.2, facecolors="none",
                          edgecolors=joint_colours[occ], linewidths=1.3, alpha=alpha, zorder=zorder + 1)
    return {"limbs": limbs, "visible": visible, "occluded": occluded}


def _as_pose_list(poses, num_joints: int) -> list[np.ndarray]:
    """``(P, K, 2|3)``, ``(K, 2|3)``, a list of ``(K, 2|3)`` or None -> list of arrays."""
    if poses is None:
        return []
    if isinstance(poses, (list, tuple)):
        return [to_numpy(p, np.float64) for p in poses]
    arr = to_numpy(poses, np.float64)
    if arr.ndim == 2:
        return [arr]
    if arr.ndim == 3:
        return list(arr)
    raise ValueError(f"poses must be (P, K, 2|3), (K, 2|3) or a list of (K, 2|3); got shape {arr.shape}")


def _draw_boxes(ax: Axes, boxes) -> list:
    patches = []
    if boxes is None:
        return patches
    for x, y, w, h in to_numpy(boxes, np.float64).reshape(-1, 4):
        patch = Rectangle((x - 0.5, y - 0.5), w, h, fill=False, ec="white", lw=0.9, ls="--", alpha=0.8)
        ax.add_patch(patch)
        patches.append(patch)
    return patches


def _show_image(ax: Axes, image) -> tuple[int, int]:
    img = as_display_image(image)
    ax.imshow(img, interpolation="nearest")
    h, w = img.shape[:2]
    ax.set_xlim(-0.5, w - 0.5)
    ax.set_ylim(h - 0.5, -0.5)
    hide_ticks(ax)
    return h, w


def plot_image_with_poses(image, poses=None, boxes=None, title: str | None = None, skeleton: Skeleton = COCO,
                          panel_size: float = 4.0) -> Figure:
    """One image with every person's skeleton (and optional boxes).

    Args:
        image: ``(H, W, 3)`` uint8, or a ``(3, H, W)`` float crop (ImageNet-normalised crops
            are denormalised automatically; see :func:`as_display_image`).
        poses: ``(P, K, 3)`` ``(x, y, v)`` (or ``(P, K, 2)``, ``(K, 3)``, a list of ``(K, 2|3)``)
            in image pixels.
        boxes: ``(P, 4)`` COCO boxes ``(x, y, w, h)``, drawn dashed.

    Returns:
        a Figure with one Axes.
    """
    h, w = as_display_image(image).shape[:2]
    fig, axes = new_figure(1, 1, panel_size=panel_size, aspect=h / max(w, 1))
    ax = axes[0, 0]
    _show_image(ax, image)
    for pose in _as_pose_list(poses, skeleton.num_joints):
        draw_pose(ax, pose, skeleton=skeleton)
    _draw_boxes(ax, boxes)
    if title:
        ax.set_title(title, fontsize=9)
    return fig


def pose_gallery(images: Sequence, poses_list: Sequence | None = None, ncols: int = 4, titles: Sequence[str] | None = None,
                 boxes_list: Sequence | None = None, skeleton: Skeleton = COCO, panel_size: float = 2.5) -> Figure:
    """A grid of images, each with its people.

    Args:
        images: ``N`` images (a list, or an ``(N, 3, H, W)`` / ``(N, H, W, 3)`` batch).
        poses_list: ``N`` entries, each what :func:`plot_image_with_poses` takes as ``poses``.
        ncols: panels per row.
        titles, boxes_list: optional, ``N`` entries each.

    Returns:
        a Figure with exactly ``N`` Axes (unused grid cells are removed).
    """
    n = len(images)
    if n == 0:
        raise ValueError("pose_gallery needs at least one image")
    for name, seq in (("poses_list", poses_list), ("titles", titles), ("boxes_list", boxes_list)):
        if seq is not None and len(seq) != n:
            raise ValueError(f"{name} has {len(seq)} entries but there are {n} images")
    ncols = max(1, min(int(ncols), n))
    nrows = math.ceil(n / ncols)
    fig, axes = new_figure(nrows, ncols, panel_size=panel_size)
    flat = axes.reshape(-1)
    for i in range(n):
        ax = flat[i]
        _show_image(ax, images[i])
        if poses_list is not None:
            for pose in _as_pose_list(poses_list[i], skeleton.num_joints):
                draw_pose(ax, pose, skeleton=skeleton, marker_size=12, linewidth=1.2)
        if boxes_list is not None:
            _draw_boxes(ax, boxes_list[i])
        if titles is not None:
            ax.set_title(str(titles[i]), fontsize=8)
    for ax in flat[n:]:
        fig.delaxes(ax)
    return fig
