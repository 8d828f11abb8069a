"""Captum explanations of one joint: shapes, IG completeness, a model left untouched, the figure."""
from __future__ import annotations

import pytest
import torch

pytest.importorskip("captum", reason="captum not installed: pip install captum==0.9.0")

from ikd_edu.errors import UserError  # noqa: E402
from ikd_edu.explain import compare_teacher_student, explain_joint, make_baseline  # noqa: E402
from ikd_edu.models import build_model  # noqa: E402

H, W = 128, 96
JOINT = 5  # left shoulder

#: Integrated Gradients' completeness error |sum(IG) - (S(x) - S(b))| with 64 Gauss-Legendre
#: steps stays below this fraction of |S(x) - S(b)| (measured on these models: <= 1.2 %).
IG_RELATIVE_DELTA = 0.05


def _with_unit_scale_head(model: torch.nn.Module) -> torch.nn.Module:
    """An untrained model with O(1) heatmaps, like a trained one (the reference head init,
    normal std 0.001, gives heatmaps of ~1e-6, where float32 noise would blur the checks)."""
    with torch.no_grad():
        for m in [*model.deconv_layers.modules(), model.final_layer]:
            if isinstance(m, (torch.nn.Conv2d, torch.nn.ConvTranspose2d)):
                torch.nn.init.kaiming_normal_(m.weight, nonlinearity="relu")
    return model


@pytest.fixture(scope="module")
def models():
    torch.manual_seed(0)
    return _with_unit_scale_head(build_model("quick-teacher")), _with_unit_scale_head(build_model("quick-student"))


@pytest.fixture(scope="module")
def crop(synthetic_root):
    from ikd_edu.data.coco import TopDownCocoDataset

    ds = TopDownCocoDataset(synthetic_root / "annotations" / "person_keypoints_val.json", synthetic_root / "val",
                            input_size=(H, W), heatmap_size=(H // 4, W // 4))
    return ds[0]["image"]  # (3, 128, 96) normalised


@pytest.mark.parametrize("method", ["integrated_gradients", "gradcam", "saliency"])
@pytest.mark.parametrize("target", ["peak", "window"])
def test_attribution_shapes(models, crop, method, target):
    _, student = models
    att = explain_joint(student, crop, JOINT, method=method, target=target, n_steps=8, internal_batch_size=4)
    assert att.map.shape == (H, W) and torch.isfinite(att.map).all()
    if method == "gradcam":
        # default layer deconv2 (stride 8): 16 x 12 positions at 128x96, >= 48 as the quick mode needs
        assert att.raw.shape == (1, H // 8, W // 8) and att.extras["layer"] == "deconv2"
        assert att.raw.shape[-1] * att.raw.shape[-2] >= 48 and (att.map >= 0).all()
    else:
        assert att.raw.shape == (3, H, W)
    x, y = att.location_heatmap
    assert 0 <= x < W // 4 and 0 <= y < H // 4
    assert att.map.abs().sum() > 0


def test_gradcam_on_another_layer_and_bad_arguments(models, crop):
    teacher, _ = models
    att = explain_joint(teacher, crop, JOINT, method="gradcam", layer="deconv2")
    assert att.raw.shape == (1, H // 8, W // 8) and att.map.shape == (H, W)
    with pytest.raises(UserError, match="not a feature tap"):
        explain_joint(teacher, crop, JOINT, method="gradcam", layer="heatmaps")
    with pytest.raises(UserError, match="method"):
        explain_joint(teacher, crop, JOINT, method="lime")
    with pytest.raises(UserError, match="joint"):
        explain_joint(teacher, crop, 17)


@pytest.mark.parametrize("baseline", ["black", "blur", "mean"])
def test_integrated_gradients_convergence_delta(models, crop, baseline):
    _, student = models
    att = explain_joint(student, crop, JOINT, method="integrated_gradients", baseline=baseline, n_steps=64,
                        internal_batch_size=16)
    gap = att.score - att.baseline_score
    assert abs(gap) > 1e-2  # the model's score really changes along the path
    assert abs(att.delta) <= IG_RELATIVE_DELTA * abs(gap), (att.delta, gap)
    # completeness recomputed by hand from the raw attribution
    assert float(att.raw.sum()) == pytest.approx(gap + att.delta, rel=1e-4, abs=1e-6)


def test_baselines():
    x = torch.randn(3, H, W)
    black = make_baseline(x, "black")
    assert torch.allclose(black[:, 0, 0], torch.tensor([-0.485 / 0.229, -0.456 / 0.224, -0.406 / 0.225]))
    assert make_baseline(x, "mean").abs().sum() == 0
    blur = make_baseline(x, "blur")
    assert blur.shape == x.shape and blur.std() < x.std() / 3


def test_the_models_get_no_gradient_updates(models, crop):
    teacher, student = models
    teacher.train()  # a training-mode model: BatchNorm statistics must not move either
    before = {k: v.clone() for k, v in teacher.state_dict().items()}
    flags = [p.requires_grad for p in teacher.parameters()]
    for method in ("integrated_gradients", "gradcam", "saliency"):
        explain_joint(teacher, crop, JOINT, method=method, n_steps=8)
    after = teacher.state_dict()
    assert all(torch.equal(before[k], after[k]) for k in before)
    assert all(p.grad is None for p in teacher.parameters())
    assert [p.requires_grad for p in teacher.parameters()] == flags and teacher.training


def test_teacher_student_figure(models, crop):
    from matplotlib.figure import Figure

    teacher, student = models
    fig, (t, s) = compare_teacher_student(teacher, student, crop, JOINT, joint_name="left_shoulder",
                                          method="integrated_gradients", baseline="blur", n_steps=8)
    assert isinstance(fig, Figure)
    panels = [ax for ax in fig.axes if ax.images]
    assert len(panels) == 3 and "teacher" in panels[1].get_title() and "student" in panels[2].get_title()
    assert t.map.shape == s.map.shape == (H, W)
    fig.canvas.draw()  # renders without error


def test_per_panel_colour_scale_is_labelled(models, crop):
    """color_scale="per-panel": each attribution panel has its own range and a labelled colour bar."""
    import numpy as np

    from ikd_edu.explain import plot_teacher_student_attribution

    teacher, student = models
    t = explain_joint(teacher, crop, JOINT, method="gradcam")
    s = explain_joint(student, crop, JOINT, method="gradcam")
    s.map = s.map * 1e-3  # a much weaker student map: invisible on a shared scale
    shared = plot_teacher_student_attribution(crop, t, s)
    own = plot_teacher_student_attribution(crop, t, s, color_scale="per-panel")

    def overlays(fig):  # the attribution image of each panel (the second image on it)
        return [ax.images[1] for ax in fig.axes if len(ax.images) == 2]

    (ts, ss), (to, so) = overlays(shared), overlays(own)
    assert ts.get_clim() == ss.get_clim()  # one range: the student map sits near 0 of it
    assert ss.get_clim()[1] == pytest.approx(float(t.map.max()), rel=1e-6)
    assert to.get_clim()[1] == pytest.approx(float(t.map.max()), rel=1e-6)
    assert so.get_clim()[1] == pytest.approx(float(s.map.max()), rel=1e-6)  # its own range
    labels = [ax.get_ylabel() for ax in own.axes if not ax.images]  # colour bars
    assert labels == ["attribution (teacher scale)", "attribution (student scale)"]
    assert [ax.get_ylabel() for ax in shared.axes if not ax.images] == ["attribution (shared scale)"]
    assert "own colour scale" in [ax for ax in own.axes if len(ax.images) == 2][1].get_title()
    own.canvas.draw()
    with pytest.raises(UserError, match="color_scale"):
        plot_teacher_student_attribution(crop, t, s, color_scale="each")
    assert np.isfinite(so.get_clim()).all()
