"""Released SimpleBaseline checkpoints expect BGR input: recorded, detected and fed as expected.

The reference pipeline is written out here independently: ``cv2.imread`` (BGR, never
converted), the reference three-point ``get_affine_transform`` with ``cv2.getAffineTransform``,
``cv2.warpAffine(INTER_LINEAR)``, ToTensor (/255) and Normalize with the RGB-listed ImageNet
mean/std, then the network loaded with plain ``load_state_dict``.
"""
from __future__ import annotations

import numpy as np
import pytest
import torch

cv2 = pytest.importorskip("cv2", reason="the reference pipeline reads images with OpenCV")

from ikd_edu.data.images import load_rgb  # noqa: E402
from ikd_edu.data.transforms import to_network_input, top_down_sample  # noqa: E402
from ikd_edu.models import build_model  # noqa: E402
from ikd_edu.models.checkpoints import checkpoint_channel_order, load_pose_checkpoint  # noqa: E402
from ikd_edu.skeleton import COCO  # noqa: E402

MEAN = np.array([0.485, 0.456, 0.406])  # as the reference lists them (RGB order), applied to BGR
STD = np.array([0.229, 0.224, 0.225])


def _reference_affine(center, scale, rot, output_size):
    """SimpleBaseline ``lib/utils/transforms.get_affine_transform`` (output_size = (w, h))."""
    scale_tmp = np.asarray(scale, np.float64) * 200.0
    src_w, (dst_w, dst_h) = scale_tmp[0], output_size
    rot_rad = np.pi * rot / 180
    sn, cs = np.sin(rot_rad), np.cos(rot_rad)
    src_dir = np.array([0 * cs - src_w * -0.5 * sn, 0 * sn + src_w * -0.5 * cs])
    dst_dir = np.array([0, dst_w * -0.5], np.float32)
    src, dst = np.zeros((3, 2), np.float32), np.zeros((3, 2), np.float32)
    src[0, :] = center
    src[1, :] = center + src_dir
    dst[0, :] = [dst_w * 0.5, dst_h * 0.5]
    dst[1, :] = np.array([dst_w * 0.5, dst_h * 0.5]) + dst_dir

    def third(a, b):
        d = a - b
        return b + np.array([-d[1], d[0]], dtype=np.float32)

    src[2:, :] = third(src[0, :], src[1, :])
    dst[2:, :] = third(dst[0, :], dst[1, :])
    return cv2.getAffineTransform(np.float32(src), np.float32(dst))


def _reference_input(path, center, scale, size_wh) -> torch.Tensor:
    bgr = cv2.imread(str(path), cv2.IMREAD_COLOR | cv2.IMREAD_IGNORE_ORIENTATION)  # (H, W, 3) BGR uint8
    trans = _reference_affine(np.asarray(center, np.float64), scale, 0.0, size_wh)
    crop = cv2.warpAffine(bgr, trans, size_wh, flags=cv2.INTER_LINEAR)  # (h, w, 3) uint8
    x = crop.astype(np.float64) / 255.0  # ToTensor
    x = (x - MEAN) / STD  # Normalize, channel 0 = blue
    return torch.from_numpy(x.transpose(2, 0, 1)).float()[None]  # (1, 3, h, w)


@pytest.fixture(scope="module")
def official(tmp_path_factory):
    """A reference-keyed ``pose_resnet_50_256x192.pth`` (random weights, O(1) heatmaps) + a real JPEG."""
    from PIL import Image

    from ikd_edu.data.synthetic import make_image

    root = tmp_path_factory.mktemp("official")
    torch.manual_seed(0)
    model = build_model("simplebaseline-r50")
    with torch.no_grad():  # the reference head init (std 0.001) gives ~1e-6 heatmaps: scale it up
        for m in [*model.deconv_layers.modules(), model.final_layer]:
            if isinstance(m, (torch.nn.Conv2d, torch.nn.ConvTranspose2d)):
                torch.nn.init.kaiming_normal_(m.weight, nonlinearity="relu")
        # ... to heatmaps of magnitude ~1, as a trained model's (Gaussian targets peak at 1)
        peak = model.eval()(torch.randn(1, 3, 256, 192)).abs().max()
        model.final_layer.weight /= peak
        model.final_layer.bias /= peak
    path = root / "pose_resnet_50_256x192.pth"
    torch.save(model.state_dict(), path)  # a raw state dict with the upstream keys, as released
    rgb, _ = make_image(0, "val", 3)
    jpeg = root / "person.jpg"
    Image.fromarray(rgb).save(jpeg, quality=95)
    return path, jpeg


def test_official_checkpoint_gives_the_reference_heatmaps(official):
    path, jpeg = official
    reference = build_model("simplebaseline-r50").eval()
    reference.load_state_dict(torch.load(path, weights_only=True))  # plain torch, upstream keys
    ours = build_model("simplebaseline-r50")
    report = load_pose_checkpoint(ours, path)
    assert report.ok and report.input_channels == "bgr" and ours.input_channels == "bgr"
    ours.eval()

    # centre (96, 96), scale 0.96 x 1.28: the 256x192 crop is the image shifted by whole pixels,
    # so both bilinear samplers copy pixels exactly and only the channel order can differ
    center, scale = np.array([96.0, 96.0]), np.array([0.96, 1.28])
    x_ref = _reference_input(jpeg, center, scale, (192, 256))
    s = top_down_sample(load_rgb(jpeg), center, scale, np.zeros((17, 3)), input_size=(256, 192), skeleton=COCO)
    x_ours = to_network_input(s["image"], report.input_channels)[None]
    np.testing.assert_allclose(x_ours.numpy(), x_ref.numpy(), atol=1e-4)  # float32 sampling weights
    with torch.no_grad():
        hm_ref, hm_ours = reference(x_ref), ours(x_ours)
        hm_rgb = ours(to_network_input(s["image"], "rgb")[None])
    assert 0.1 < hm_ref.abs().max() < 10  # O(1) heatmaps, so 1e-4 is a real tolerance
    torch.testing.assert_close(hm_ours, hm_ref, atol=1e-4, rtol=0)
    # fed RGB (what ikd-edu did before), the same weights give other heatmaps
    assert (hm_rgb - hm_ref).abs().max() > 1e-2


def test_checkpoints_record_their_channel_order(tmp_path):
    state = build_model("quick-student").state_dict()
    assert checkpoint_channel_order({"model": state, "input_channels": "bgr"}) == "bgr"
    assert checkpoint_channel_order({"model": state, "input_channels": "rgb"}, "pose_resnet_50.pth") == "rgb"
    assert checkpoint_channel_order(state, tmp_path / "pose_resnet_101_384x288.pth") == "bgr"
    assert checkpoint_channel_order(state, tmp_path / "best.pt") == "rgb"
    torch.save({"model": state, "input_channels": "bgr"}, tmp_path / "mine.pt")
    model = build_model("quick-student")
    assert load_pose_checkpoint(model, tmp_path / "mine.pt").input_channels == "bgr"
    assert model.input_channels == "bgr"


def test_dataset_feeds_the_requested_channel_order(synthetic_root):
    from ikd_edu.data.coco import TopDownCocoDataset

    args = (synthetic_root / "annotations/person_keypoints_val.json", synthetic_root / "val")
    kw = dict(input_size=(128, 96), heatmap_size=(32, 24))
    rgb = TopDownCocoDataset(*args, **kw)[0]["image"]
    bgr = TopDownCocoDataset(*args, channel_order="bgr", **kw)[0]["image"]
    m, s = torch.tensor(MEAN).view(3, 1, 1).float(), torch.tensor(STD).view(3, 1, 1).float()
    raw = rgb * s + m  # back to 0..1 RGB
    torch.testing.assert_close(bgr, (raw.flip(0) - m) / s, atol=1e-5, rtol=0)
    assert not torch.allclose(bgr, rgb)
