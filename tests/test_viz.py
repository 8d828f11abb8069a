"""Visualisation functions: figures, what they draw, and that they draw the library's numbers."""
from __future__ import annotations

import csv

import matplotlib

matplotlib.use("Agg")
import numpy as np  # noqa: E402
import pytest  # noqa: E402
import torch  # noqa: E402
from matplotlib.colors import to_rgba  # noqa: E402
from matplotlib.figure import Figure  # noqa: E402

from ikd_edu.distill.structure import affinity_at, joint_relations  # noqa: E402
from ikd_edu.skeleton import COCO, LEFT_COLOUR, RIGHT_COLOUR  # noqa: E402
from ikd_edu.viz import (  # noqa: E402
    as_display_image, draw_pose, features_pca_rgb, heatmap_view, plot_ablation, plot_affinity, plot_channel_grid,
    plot_features_pca, plot_heatmap_overlay, plot_image_with_poses, plot_joint_heatmaps, plot_joint_relations,
    plot_teacher_student, plot_training_curves, pose_gallery,
)
from ikd_edu.viz.skeleton import new_figure  # noqa: E402

K = 17


def panels(fig: Figure) -> list:
    """The figure's axes without colour bars."""
    return [ax for ax in fig.axes if ax.get_label() != "<colorbar>"]


def colourbars(fig: Figure) -> list:
    return [ax for ax in fig.axes if ax.get_label() == "<colorbar>"]


def shown(ax) -> np.ndarray:
    """The array of the top-most image of an Axes."""
    return np.asarray(ax.images[-1].get_array())


@pytest.fixture
def rng():
    return np.random.default_rng(0)


@pytest.fixture
def pose(rng) -> np.ndarray:
    """(K, 3): joints 0-2 unlabelled at (0, 0), 3-5 occluded, the rest visible."""
    kp = np.zeros((K, 3))
    kp[:, :2] = rng.uniform(10, 50, size=(K, 2))
    kp[:, 2] = 2
    kp[0:3] = 0  # COCO stores unlabelled joints as (0, 0, 0)
    kp[3:6, 2] = 1
    return kp


# ------------------------------------------------------------------------- skeleton
def test_draw_pose_never_draws_unlabelled_joints_and_hollows_occluded(pose):
    fig, axes = new_figure()
    art = draw_pose(axes[0, 0], pose)
    segments = np.concatenate([np.asarray(s) for s in art["limbs"].get_segments()])
    assert not np.any(np.all(np.isclose(segments, 0.0), axis=1)), "a limb goes to (0, 0)"
    expected_edges = [e for e in COCO.edges if pose[e[0], 2] > 0 and pose[e[1], 2] > 0]
    assert len(art["limbs"].get_segments()) == len(expected_edges)
    vis, occ = art["visible"].get_offsets(), art["occluded"].get_offsets()
    assert len(vis) == int((pose[:, 2] == 2).sum()) and len(occ) == 3
    for offsets in (vis, occ):
        assert not np.any(np.all(np.isclose(offsets, 0.0), axis=1)), "a marker at (0, 0)"
    np.testing.assert_allclose(occ, pose[3:6, :2])
    # occluded: hollow (transparent face, coloured edge); visible: filled
    assert np.all(art["occluded"].get_facecolors()[:, 3] == 0)
    assert np.all(art["occluded"].get_edgecolors()[:, 3] > 0)
    assert np.all(art["visible"].get_facecolors()[:, 3] > 0)
    # colours from ikd_edu.skeleton: left_eye... first visible joint 6 = right_shoulder (orange), 7 left_elbow (blue)
    face = art["visible"].get_facecolors()
    np.testing.assert_allclose(face[0, :3], RIGHT_COLOUR, atol=1e-6)
    np.testing.assert_allclose(face[1, :3], LEFT_COLOUR, atol=1e-6)


def test_draw_pose_visibility_argument_and_nan(pose):
    fig, axes = new_figure()
    xy = pose[:, :2].copy()
    xy[10] = np.nan
    art = draw_pose(axes[0, 0], torch.tensor(xy), visibility=torch.tensor(pose[:, 2]))
    vis = art["visible"].get_offsets()
    assert len(vis) == int((pose[:, 2] == 2).sum()) - 1  # NaN joint dropped
    assert np.isfinite(np.concatenate([np.asarray(s) for s in art["limbs"].get_segments()])).all()
    with pytest.raises(ValueError, match="skeleton"):
        draw_pose(axes[0, 0], pose[:5])


def test_occluded_limbs_are_dashed(pose):
    fig, axes = new_figure()
    art = draw_pose(axes[0, 0], pose)
    styles = art["limbs"].get_linestyles()
    kept = [e for e in COCO.edges if pose[e[0], 2] > 0 and pose[e[1], 2] > 0]
    for (a, b), style in zip(kept, styles):
        solid = style[1] is None
        assert solid == (pose[a, 2] == 2 and pose[b, 2] == 2)


def test_as_display_image_denormalises(rng):
    from ikd_edu.data.transforms import normalize

    img01 = torch.tensor(rng.uniform(0.1, 0.9, size=(3, 8, 6)), dtype=torch.float32)
    out = as_display_image(normalize(img01))
    assert out.shape == (8, 6, 3)
    np.testing.assert_allclose(out, img01.permute(1, 2, 0).numpy(), atol=1e-5)
    u8 = (rng.uniform(0, 255, size=(8, 6, 3))).astype(np.uint8)
    np.testing.assert_allclose(as_display_image(u8), u8 / 255.0, atol=1e-6)


def test_plot_image_with_poses_and_gallery(pose, rng):
    image = rng.integers(0, 255, size=(64, 48, 3), dtype=np.uint8)
    fig = plot_image_with_poses(image, np.stack([pose, pose]), boxes=[[1, 2, 30, 40], [5, 5, 10, 10]], title="t")
    assert isinstance(fig, Figure) and len(fig.axes) == 1
    ax = fig.axes[0]
    assert len(ax.collections) == 2 * 3 and len(ax.patches) == 2 and ax.get_title() == "t"
    fig = pose_gallery([image] * 5, [[pose]] * 5, ncols=3, titles=list("abcde"))
    assert len(fig.axes) == 5 and [a.get_title() for a in fig.axes] == list("abcde")
    with pytest.raises(ValueError):
        pose_gallery([image] * 2, [[pose]] * 3)


# ------------------------------------------------------------------------- heatmaps
def test_heatmap_view_selects_joint_or_max(rng):
    hm = rng.random((K, 8, 6)).astype(np.float32)
    np.testing.assert_array_equal(heatmap_view(hm, None), hm.max(axis=0))
    np.testing.assert_array_equal(heatmap_view(hm, "all"), hm.max(axis=0))
    np.testing.assert_array_equal(heatmap_view(hm, 4), hm[4])
    np.testing.assert_array_equal(heatmap_view(hm, "left_wrist"), hm[9])
    with pytest.raises(ValueError, match="out of range"):
        heatmap_view(hm, K)


def test_plot_heatmap_overlay_aligns_heatmap_pixels_with_crop(rng):
    hm = torch.rand(K, 16, 12)
    image = torch.randn(3, 64, 48)
    fig = plot_heatmap_overlay(image, hm, joint=2)
    ax = panels(fig)[0]
    assert len(panels(fig)) == 1 and len(colourbars(fig)) == 1 and len(ax.images) == 2
    np.testing.assert_array_equal(shown(ax), hm[2].numpy())
    # stride 4: heatmap pixel centres on crop pixels 0, 4, ... -> extent [-2, 46] x [-2, 62]
    np.testing.assert_allclose(ax.images[-1].get_extent(), (-2.0, 46.0, 62.0, -2.0))
    fig = plot_heatmap_overlay(None, hm)
    np.testing.assert_array_equal(shown(panels(fig)[0]), hm.max(0).values.numpy())


def test_plot_joint_heatmaps_grid(rng):
    hm = rng.random((K, 8, 6))
    fig = plot_joint_heatmaps(hm, ncols=5)
    axes = panels(fig)
    assert len(axes) == K
    assert axes[9].get_title().startswith("L wrist")
    np.testing.assert_array_equal(shown(axes[9]), hm[9].astype(np.float32))


def test_plot_teacher_student_panels_and_difference(rng):
    t, s = torch.rand(K, 8, 6), torch.rand(K, 8, 6)
    fig = plot_teacher_student(torch.randn(3, 32, 24), t, s, joint=5)
    axes = panels(fig)
    assert len(axes) == 3 and len(colourbars(fig)) == 2
    np.testing.assert_array_equal(shown(axes[0]), t[5].numpy())
    np.testing.assert_array_equal(shown(axes[1]), s[5].numpy())
    np.testing.assert_allclose(shown(axes[2]), (s[5] - t[5]).numpy(), atol=1e-7)
    diff_im = axes[2].images[-1]
    assert diff_im.norm.vmin == pytest.approx(-diff_im.norm.vmax)  # centred at 0
    assert diff_im.get_cmap().name == "RdBu_r"
    with pytest.raises(ValueError, match="differ"):
        plot_teacher_student(None, t, s[:5])


# ------------------------------------------------------------------------- features
def test_features_pca_rgb_range_shape_and_structure():
    torch.manual_seed(0)
    f = torch.randn(32, 10, 7)
    rgb = features_pca_rgb(f)
    assert rgb.shape == (10, 7, 3) and rgb.dtype == np.float32
    assert rgb.min() >= 0.0 and rgb.max() <= 1.0 and rgb.max() > 0.9
    # two groups of positions with different feature vectors -> two colours on component 1
    g = torch.zeros(16, 4, 4)
    g[:, :, :2] = torch.randn(16, 1, 1)
    g[:, :, 2:] = torch.randn(16, 1, 1)
    out = features_pca_rgb(g + 1e-3 * torch.randn_like(g))
    assert abs(out[:, :2, 0].mean() - out[:, 2:, 0].mean()) > 0.9
    np.testing.assert_array_equal(features_pca_rgb(torch.ones(8, 3, 3)), 0.0)  # constant map
    assert features_pca_rgb(torch.randn(2, 5, 5)).shape == (5, 5, 3)  # C < 3


def test_plot_channel_grid_and_pca(rng):
    f = torch.randn(20, 6, 5)
    f[7] *= 10  # the strongest channel comes first by default
    fig = plot_channel_grid(f, max_channels=6, ncols=4)
    axes = panels(fig)
    assert len(axes) == 6 and axes[0].get_title() == "ch 7"
    np.testing.assert_array_equal(shown(axes[0]), f[7].numpy())
    fig = plot_channel_grid(f, channels=[1, 3])
    assert [a.get_title() for a in panels(fig)] == ["ch 1", "ch 3"]
    with pytest.raises(ValueError, match="out of range"):
        plot_channel_grid(f, channels=[25])
    fig = plot_features_pca(torch.randn(32, 6, 5), torch.randn(8, 6, 5), image=torch.randn(3, 24, 20))
    assert len(panels(fig)) == 3


# ------------------------------------------------------------------------- affinity
def test_plot_affinity_shows_structure_module_values():
    torch.manual_seed(1)
    t, s = torch.relu(torch.randn(64, 8, 6)), torch.relu(torch.randn(16, 8, 6))
    query = (3, 2)
    fig = plot_affinity(torch.randn(3, 32, 24), t, s, query)
    axes = panels(fig)
    assert len(axes) == 4 and len(colourbars(fig)) == 2
    expect_t = affinity_at(t[None], query, "auto")[0].numpy()
    expect_s = affinity_at(s[None], query, "auto")[0].numpy()
    np.testing.assert_allclose(shown(axes[1]), expect_t, atol=1e-6)
    np.testing.assert_allclose(shown(axes[2]), expect_s, atol=1e-6)
    np.testing.assert_allclose(shown(axes[3]), expect_s - expect_t, atol=1e-6)
    assert shown(axes[1])[query] == pytest.approx(1.0, abs=1e-5)  # self-affinity
    # query marked on every affinity panel
    for ax in axes[1:]:
        marks = [line for line in ax.lines if line.get_marker() == "*"]
        assert len(marks) == 1 and tuple(marks[0].get_xydata()[0]) == (2, 3)


def test_plot_affinity_pools_large_maps_like_the_loss():
    torch.manual_seed(2)
    t, s = torch.randn(8, 32, 24), torch.randn(4, 32, 24)
    fig = plot_affinity(None, t, s, (5, 1), pool="auto")  # 32x24 -> 16x12
    axes = panels(fig)
    assert len(axes) == 3
    np.testing.assert_allclose(shown(axes[0]), affinity_at(t[None], (5, 1), "auto")[0].numpy(), atol=1e-6)
    assert shown(axes[0]).shape == (16, 12)
    with pytest.raises(ValueError, match="outside"):
        plot_affinity(None, t, s, (16, 0))


def test_plot_joint_relations_uses_joint_relations():
    torch.manual_seed(3)
    t, s = torch.rand(K, 8, 6), torch.rand(K, 8, 6)
    fig = plot_joint_relations(t, s)
    axes = panels(fig)
    assert len(axes) == 3 and len(colourbars(fig)) == 2
    np.testing.assert_allclose(shown(axes[0]), joint_relations(t[None])[0].numpy(), atol=1e-6)
    np.testing.assert_allclose(shown(axes[2]), (joint_relations(s[None]) - joint_relations(t[None]))[0].numpy(),
                               atol=1e-6)
    labels = [tick.get_text() for tick in axes[0].get_yticklabels()]
    assert labels[0] == "nose" and labels[9] == "L wrist" and len(labels) == K
    assert to_rgba(axes[0].get_yticklabels()[10].get_color())[:3] == pytest.approx(RIGHT_COLOUR)


# ------------------------------------------------------------------------- curves
def _write_csv(path, rows):
    with open(path, "w", newline="") as fh:
        w = csv.DictWriter(fh, fieldnames=list(rows[0]))
        w.writeheader()
        w.writerows(rows)


def test_plot_training_curves_from_run_folder(tmp_path):
    metrics = [{"step": 50 * i, "epoch": 0, "lr": 1e-3, "total": 1.0 / (i + 1), "gt": 0.5 / (i + 1),
                "logit": "" if i == 2 else 0.1 / (i + 1)} for i in range(1, 6)]
    _write_csv(tmp_path / "metrics.csv", metrics)
    _write_csv(tmp_path / "eval.csv", [{"step": 100, "epoch": 0, "AP": 0.2, "AP50": 0.5},
                                       {"step": 250, "epoch": 1, "AP": 0.3, "AP50": 0.6}])
    fig = plot_training_curves(tmp_path)
    loss_ax, metric_ax = fig.axes
    assert sorted(line.get_label() for line in loss_ax.lines) == ["gt", "logit", "total"]
    logit = next(line for line in loss_ax.lines if line.get_label() == "logit")
    assert len(logit.get_xdata()) == 4  # the empty cell is skipped
    np.testing.assert_allclose(metric_ax.lines[0].get_ydata(), [0.2, 0.3])
    assert loss_ax.get_yscale() == "log"
    # a CSV path finds eval.csv next to it; keys selects; missing keys are ignored
    fig = plot_training_curves(tmp_path / "metrics.csv", keys=["gt", "feature"])
    assert [line.get_label() for line in fig.axes[0].lines] == ["gt"] and len(fig.axes) == 2


def test_plot_training_curves_rows_without_metric_and_errors():
    rows = [{"step": i, "total": 1.0 + i} for i in range(4)]
    fig = plot_training_curves(rows, log_scale=False)
    assert len(fig.axes) == 1 and len(fig.axes[0].lines) == 1
    with pytest.raises(ValueError, match="nothing to plot"):
        plot_training_curves([{"step": 1, "epoch": 0}])


def test_plot_ablation_bars_errorbars_and_baseline():
    rows = [{"name": "labels-only", "AP_mean": 0.29, "AP_std": 0.007, "n": 3},
            {"name": "logit", "AP_mean": 0.38, "AP_std": 0.01, "n": 3},
            {"name": "all terms", "AP_mean": 0.468, "AP_std": 0.001, "n": 3}]
    fig = plot_ablation(rows, scale=100)
    ax = fig.axes[0]
    bars = ax.patches[:3]
    np.testing.assert_allclose([b.get_height() for b in bars], [29.0, 38.0, 46.8])
    from matplotlib.container import BarContainer

    bar_container = next(c for c in ax.containers if isinstance(c, BarContainer))
    error_segments = bar_container.errorbar.lines[2][0].get_segments()
    np.testing.assert_allclose([seg[1][1] - seg[0][1] for seg in error_segments], [1.4, 2.0, 0.2], atol=1e-9)
    baseline = [line for line in ax.lines if line.get_linestyle() == "--"]
    assert len(baseline) == 1 and baseline[0].get_ydata()[0] == pytest.approx(29.0)
    with pytest.raises(ValueError, match="baseline"):
        plot_ablation(rows, baseline="nope")
