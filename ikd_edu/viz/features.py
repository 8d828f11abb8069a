"""Feature maps: single channels, and all channels at once as a PCA colour image.

Axes: **C** channels, **H x W** positions of one instance's feature map (e.g. a
``model.forward_taps(x, ["layer4"])["layer4"][i]``).

Teacher and student features usually have different channel counts, so they cannot be
compared channel by channel. :func:`features_pca_rgb` projects every position's C-vector on
the first three principal components of that map and shows them as R, G, B: positions
that the network represents alike get similar colours. Comparing the *pattern* of colours
(not the colours themselves: each map has its own PCA basis, and a component's sign is
arbitrary) shows whether the student groups positions the way the teacher does - what the
feature and affinity terms ask of it.
"""
from __future__ import annotations

import math

import numpy as np
import torch
from matplotlib.figure import Figure

from ikd_edu.viz.skeleton import as_display_image, hide_ticks, new_figure

__all__ = ["top_channels", "plot_channel_grid", "features_pca_rgb", "plot_features_pca"]


def _check_features(features, name: str = "features") -> torch.Tensor:
    t = features.detach().cpu().float() if isinstance(features, torch.Tensor) else torch.as_tensor(
        np.asarray(features), dtype=torch.float32)
    if t.dim() == 4 and t.shape[0] == 1:
        t = t[0]
    if t.dim() != 3:
        raise ValueError(f"{name} must be (C, H, W) for one instance; got shape {tuple(t.shape)}. "
                         "Index one instance of a batch first, e.g. taps['layer4'][0].")
    return t


def top_channels(features, count: int = 16) -> list[int]:
    """The ``count`` channels with the largest mean absolute activation, strongest first."""
    f = _check_features(features)
    energy = f.abs().mean(dim=(1, 2))  # (C,)
    return energy.argsort(descending=True)[: int(count)].tolist()


def plot_channel_grid(features, channels=None, max_channels: int = 16, ncols: int = 8, cmap: str = "viridis",
                      title: str | None = None, panel_size: float = 1.5) -> Figure:
    """A grid of single channels, each scaled to its own range.

    Args:
        features: ``(C, H, W)``.
        channels: which channels to show; default the ``max_channels`` strongest (largest
            mean absolute activation).
        max_channels: at most this many panels.

    Returns:
        a Figure with one Axes per shown channel, titled ``ch <index>``.
    """
    f = _check_features(features)
    c = f.shape[0]
    chosen = top_channels(f, max_channels) if channels is None else [int(i) for i in channels][: int(max_channels)]
    bad = [i for i in chosen if not 0 <= i < c]
    if bad:
        raise ValueError(f"channels {bad} are out of range: the features have {c} channels (0..{c - 1})")
    if not chosen:
        raise ValueError("no channels to show; pass channels=[...] or max_channels >= 1")
    ncols = max(1, min(int(ncols), len(chosen)))
    nrows = math.ceil(len(chosen) / ncols)
    h, w = f.shape[-2:]
    fig, axes = new_figure(nrows, ncols, panel_size=panel_size, aspect=h / w)
    flat = axes.reshape(-1)
    for ax, ch in zip(flat, chosen):
        ax.imshow(f[ch].numpy(), cmap=cmap, interpolation="nearest")
        ax.set_title(f"ch {ch}", fontsize=7)
        hide_ticks(ax)
    for ax in flat[len(chosen):]:
        fig.delaxes(ax)
    if title:
        fig.suptitle(title, fontsize=9)
    return fig


def features_pca_rgb(features, num_components: int = 3, clip_percentile: float = 1.0,
                     return_explained: bool = False):
    """Project each position's channel vector on the first principal components -> colours.

    ``X`` = the ``(H W, C)`` matrix of position vectors, centred per channel; its SVD
    ``X = U S V^T`` gives the components ``V[:, :3]``; the image is ``X V[:, :3]`` reshaped to
    ``(H, W, 3)``, each component clipped to its ``[p, 100 - p]`` percentiles and scaled to
    0..1. Fewer than three components (``C < 3`` or a rank-deficient map) leave the missing
    colour channels at 0; a constant map gives all zeros.

    Args:
        features: ``(C, H, W)`` (tensor or array).
        clip_percentile: ``p`` above (robust to a few extreme positions); 0 = plain min-max.
        return_explained: also return the fraction of the variance each component explains.

    Returns:
        ``(H, W, 3)`` float32 array in ``[0, 1]`` (and ``(3,)`` explained fractions).
    """
    f = _check_features(features).double()
    c, h, w = f.shape
    x = f.reshape(c, h * w).T  # (P, C)
    x = x - x.mean(dim=0, keepdim=True)
    _, svals, vh = torch.linalg.svd(x, full_matrices=False)  # vh: (min(P, C), C)
    k = min(int(num_components), 3, vh.shape[0])
    proj = x @ vh[:k].T  # (P, k)
    total = float((svals**2).sum())
    explained = np.zeros(3)
    out = np.zeros((h * w, 3), dtype=np.float64)
    for i in range(k):
        var = float(svals[i] ** 2)
        if total <= 0 or var <= 1e-12 * total:
            continue
        explained[i] = var / total
        col = proj[:, i].numpy()
        lo, hi = np.percentile(col, [clip_percentile, 100.0 - clip_percentile]) if clip_percentile > 0 else (col.min(), col.max())
        if hi - lo <= 0:
            lo, hi = col.min(), col.max()
        out[:, i] = np.clip((col - lo) / max(hi - lo, 1e-12), 0.0, 1.0)
    rgb = out.reshape(h, w, 3).astype(np.float32)
    return (rgb, explained) if return_explained else rgb


def plot_features_pca(teacher_features, student_features, image=None, titles=("teacher", "student"),
                      panel_size: float = 3.0) -> Figure:
    """Teacher and student feature maps as PCA colour images, side by side (and the crop).

    Args:
        teacher_features: ``(C_t, H, W)``; student_features: ``(C_s, H', W')`` (channel counts
            and sizes may differ).
        image: optional crop shown as the first panel.

    Returns:
        a Figure with 2 Axes (3 with ``image``); titles give the variance explained by the
        three components.
    """
    maps = [features_pca_rgb(teacher_features, return_explained=True),
            features_pca_rgb(student_features, return_explained=True)]
    panels = 2 + (image is not None)
    fig, axes = new_figure(1, panels, panel_size=panel_size)
    axes = axes[0]
    if image is not None:
        axes[0].imshow(as_display_image(image), interpolation="nearest")
        axes[0].set_title("input", fontsize=9)
        hide_ticks(axes[0])
        axes = axes[1:]
    for ax, (rgb, explained), name, feats in zip(axes, maps, titles, (teacher_features, student_features)):
        ax.imshow(rgb, interpolation="nearest")
        c = _check_features(feats).shape[0]
        ax.set_title(f"{name} ({c} ch): PCA, {100 * explained.sum():.0f}% var", fontsize=9)
        hide_ticks(ax)
    return fig
