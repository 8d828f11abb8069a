"""Widgets: every control changes what is shown; callbacks work without a browser."""
from __future__ import annotations

import matplotlib

matplotlib.use("Agg")
import numpy as np  # noqa: E402
import pytest  # noqa: E402
import torch  # noqa: E402
from matplotlib.figure import Figure  # noqa: E402

pytest.importorskip("ipywidgets")

from ikd_edu.distill.structure import affinity_at  # noqa: E402
from ikd_edu.viz.widgets import AffinityExplorer, FeatureBrowser, HeatmapExplorer  # noqa: E402

K = 17


def shown(fig: Figure) -> np.ndarray:
    ax = next(a for a in fig.axes if a.get_label() != "<colorbar>" and a.images)
    return np.asarray(ax.images[-1].get_array())


@pytest.fixture
def heatmap_explorer():
    torch.manual_seed(0)
    images = torch.randn(4, 3, 32, 24)
    teacher, student = torch.rand(4, K, 8, 6), torch.rand(4, K, 8, 6)
    keypoints = torch.rand(4, K, 3) * 20
    keypoints[..., 2] = 2
    # crops 0 and 1 are two people of one image; crops 2 and 3 are images of their own
    return HeatmapExplorer(images, teacher, student, keypoints=keypoints, image_ids=[7, 7, 8, 9]), teacher, student


def test_heatmap_explorer_each_control(heatmap_explorer):
    ex, teacher, student = heatmap_explorer
    fig = ex.update()
    assert isinstance(fig, Figure)
    np.testing.assert_array_equal(ex.current_data()["heatmap"], teacher[0].max(0).values.numpy())
    np.testing.assert_array_equal(shown(fig), teacher[0].max(0).values.numpy())

    # person (the second crop of the same image)
    ex.controls["person"].value = 1
    assert ex.state["person"] == 1 and ex.crop_index == 1
    np.testing.assert_array_equal(shown(ex.figure), teacher[1].max(0).values.numpy())

    # joint
    ex.controls["joint"].value = 9
    assert ex.state["joint"] == 9
    np.testing.assert_array_equal(shown(ex.figure), teacher[1, 9].numpy())
    assert "L wrist" in ex.figure.axes[0].get_title()

    # view: student, then difference
    ex.controls["view"].value = "student"
    np.testing.assert_array_equal(shown(ex.figure), student[1, 9].numpy())
    ex.controls["view"].value = "difference"
    np.testing.assert_allclose(shown(ex.figure), (student[1, 9] - teacher[1, 9]).numpy(), atol=1e-7)
    assert ex.figure.axes[0].images[-1].get_cmap().name == "RdBu_r"

    # sample: a new image resets the person; the person slider follows the sample's size
    ex.controls["sample"].value = 2
    assert ex.state["sample"] == 2 and ex.state["person"] == 0 and ex.crop_index == 3
    assert ex.controls["person"].disabled and ex.controls["person"].value == 0
    np.testing.assert_allclose(ex.current_data()["heatmap"], (student[3, 9] - teacher[3, 9]).numpy(), atol=1e-7)


def test_heatmap_explorer_update_callback_and_errors(heatmap_explorer):
    ex, teacher, _ = heatmap_explorer
    ex.update(sample=0, person=1, joint="right_knee", view="teacher")
    assert ex.state == {"sample": 0, "person": 1, "joint": 14, "view": "teacher"}
    assert ex.controls["joint"].value == 14 and ex.controls["person"].value == 1  # controls follow
    np.testing.assert_array_equal(ex.current_data()["heatmap"], teacher[1, 14].numpy())
    ex.update(joint="all")
    np.testing.assert_array_equal(ex.current_data()["heatmap"], teacher[1].max(0).values.numpy())
    with pytest.raises(ValueError, match="person"):
        ex.update(sample=1, person=1)
    with pytest.raises(ValueError, match="view"):
        ex.update(view="both")
    with pytest.raises(ValueError, match="unknown control"):
        ex.update(colour="red")
    with pytest.raises(ValueError, match="student"):
        HeatmapExplorer(torch.randn(2, 3, 32, 24), torch.rand(2, K, 8, 6), torch.rand(3, K, 8, 6))


def test_heatmap_explorer_widget_renders_png(heatmap_explorer):
    import ipywidgets as W

    ex, _, _ = heatmap_explorer
    box = ex.widget
    assert isinstance(box, W.VBox)
    image = box.children[1]
    first = bytes(image.value)
    assert first.startswith(b"\x89PNG")
    ex.controls["joint"].value = 3
    assert bytes(image.value) != first


def test_feature_browser_each_control():
    torch.manual_seed(1)
    feats = {"teacher/layer4": torch.randn(3, 8, 4, 3), "student/layer4": torch.randn(3, 4, 4, 3)}
    fb = FeatureBrowser(feats, images=torch.randn(3, 3, 16, 12))
    fb.update()
    np.testing.assert_array_equal(fb.current_data()["data"], feats["teacher/layer4"][0, 0].numpy())

    fb.controls["channel"].value = 6
    np.testing.assert_array_equal(shown_last(fb.figure), feats["teacher/layer4"][0, 6].numpy())

    fb.controls["sample"].value = 2
    np.testing.assert_array_equal(shown_last(fb.figure), feats["teacher/layer4"][2, 6].numpy())

    # a layer with fewer channels clamps the channel and the slider
    fb.controls["layer"].value = "student/layer4"
    assert fb.state["channel"] == 3 and fb.controls["channel"].max == 3 and fb.controls["channel"].value == 3
    np.testing.assert_array_equal(shown_last(fb.figure), feats["student/layer4"][2, 3].numpy())

    fb.controls["mode"].value = "pca"
    data = fb.current_data()["data"]
    assert data.shape == (4, 3, 3) and 0.0 <= data.min() and data.max() <= 1.0
    np.testing.assert_array_equal(shown_last(fb.figure), data)
    with pytest.raises(ValueError, match="out of range"):
        fb.update(channel=4)
    with pytest.raises(ValueError, match="unknown layer"):
        fb.update(layer="layer9")


def shown_last(fig: Figure) -> np.ndarray:
    """The map panel (the last non-colour-bar axes)."""
    ax = [a for a in fig.axes if a.get_label() != "<colorbar>"][-1]
    return np.asarray(ax.images[-1].get_array())


def test_affinity_explorer_each_control():
    torch.manual_seed(2)
    t, s = torch.relu(torch.randn(32, 8, 6)), torch.relu(torch.randn(8, 8, 6))
    ae = AffinityExplorer(torch.randn(3, 32, 24), t, s)
    assert ae.state == {"query_y": 4, "query_x": 3}
    before = ae.current_data()["teacher"].copy()

    ae.controls["query_y"].value = 1
    after_y = ae.current_data()
    assert after_y["query_yx"] == (1, 3)
    np.testing.assert_allclose(after_y["teacher"], affinity_at(t[None], (1, 3))[0].numpy(), atol=1e-6)
    assert not np.allclose(after_y["teacher"], before)

    ae.controls["query_x"].value = 5
    data = ae.current_data()
    np.testing.assert_allclose(data["student"], affinity_at(s[None], (1, 5))[0].numpy(), atol=1e-6)
    panels = [a for a in ae.figure.axes if a.get_label() != "<colorbar>"]
    np.testing.assert_allclose(np.asarray(panels[1].images[-1].get_array()), data["teacher"], atol=1e-6)
    np.testing.assert_allclose(np.asarray(panels[3].images[-1].get_array()), data["difference"], atol=1e-6)
    with pytest.raises(ValueError, match="outside"):
        ae.update(query_x=6)
