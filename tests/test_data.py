"""Data pipeline: geometry, the affine crop, flips, image loading, COCO/MPII datasets.

Expected values are written from the definitions here in the test, never by calling the
code under test.
"""
from __future__ import annotations

import json
import math

import numpy as np
import pytest
import torch
from PIL import Image

from ikd_edu.data.images import load_rgb
from ikd_edu.data.transforms import (
    AugmentConfig,
    crop_image,
    crop_images_batched,
    flip_center,
    flip_joints,
    half_body_transform,
    normalize,
    sample_augmentation,
)
from ikd_edu.errors import UserError
from ikd_edu.geometry import affine_points, box_to_center_scale, get_affine_transform
from ikd_edu.skeleton import COCO, MPII

TOL = 1e-4


# --------------------------------------------------------------------------- geometry


def test_box_to_center_scale_matches_definition():
    boxes = np.array([[10.0, 20.0, 30.0, 100.0], [0.0, 0.0, 200.0, 50.0], [5.0, 5.0, 75.0, 100.0]])
    aspect = 192 / 256
    center, scale = box_to_center_scale(boxes, aspect)
    for (x, y, w, h), c, s in zip(boxes, center.numpy(), scale.numpy()):
        # reference _xywh2cs: pad to the aspect ratio, then / 200 * 1.25
        if w > aspect * h:
            h = w / aspect
        elif w < aspect * h:
            w = h * aspect
        np.testing.assert_allclose(s, [w / 200 * 1.25, h / 200 * 1.25], atol=TOL)
    np.testing.assert_allclose(center.numpy(), boxes[:, :2] + boxes[:, 2:] / 2, atol=TOL)
    # the padded box has the crop's aspect ratio
    np.testing.assert_allclose(scale[:, 0] / scale[:, 1], aspect, atol=TOL)


def _solve_three_points(src: np.ndarray, dst: np.ndarray) -> np.ndarray:
    """cv2.getAffineTransform: the (2, 3) A with A [src_i, 1] = dst_i for 3 points."""
    m = np.zeros((6, 6))
    b = np.zeros(6)
    for i, ((x, y), (u, v)) in enumerate(zip(src, dst)):
        m[2 * i] = [x, y, 1, 0, 0, 0]
        m[2 * i + 1] = [0, 0, 0, x, y, 1]
        b[2 * i], b[2 * i + 1] = u, v
    return np.linalg.solve(m, b).reshape(2, 3)


def _reference_points(center, scale, rot_deg, out_hw):
    """The reference get_affine_transform's three source and destination points."""
    out_h, out_w = out_hw
    src_w = scale[0] * 200
    r = math.radians(rot_deg)
    # get_dir([0, -src_w/2], rot)
    src_dir = np.array([0 * math.cos(r) - (-src_w / 2) * math.sin(r), 0 * math.sin(r) + (-src_w / 2) * math.cos(r)])
    dst_dir = np.array([0, -out_w * 0.5])

    def third(a, b):
        d = a - b
        return b + np.array([-d[1], d[0]])

    src0, src1 = np.array(center, float), np.array(center, float) + src_dir
    dst0, dst1 = np.array([out_w * 0.5, out_h * 0.5]), np.array([out_w * 0.5, out_h * 0.5]) + dst_dir
    return np.stack([src0, src1, third(src0, src1)]), np.stack([dst0, dst1, third(dst0, dst1)])


CASES = [
    ((100.0, 80.0), (1.2, 1.6), 0.0, (256, 192)),
    ((33.5, 250.25), (0.4, 0.5), 30.0, (256, 192)),
    ((400.0, 300.0), (2.0, 2.0), -75.0, (128, 96)),
    ((10.0, 10.0), (0.75, 1.0), 180.0, (64, 48)),
]


@pytest.mark.parametrize("center,scale,rot,out_hw", CASES)
def test_affine_transform_three_point_and_closed_form(center, scale, rot, out_hw):
    got = get_affine_transform(np.array([center]), np.array([scale]), [rot], out_hw)[0].numpy()
    src, dst = _reference_points(center, scale, rot, out_hw)
    np.testing.assert_allclose(got, _solve_three_points(src, dst), atol=TOL)
    # closed form of the similarity: k [[cos r, sin r], [-sin r, cos r]], centre -> crop centre
    k = out_hw[1] / (scale[0] * 200)
    r = math.radians(rot)
    lin = k * np.array([[math.cos(r), math.sin(r)], [-math.sin(r), math.cos(r)]])
    t = np.array([out_hw[1] / 2, out_hw[0] / 2]) - lin @ np.array(center)
    np.testing.assert_allclose(got, np.concatenate([lin, t[:, None]], 1), atol=TOL)
    # inverse round trip
    inv = get_affine_transform(np.array([center]), np.array([scale]), [rot], out_hw, inverse=True)[0].numpy()
    np.testing.assert_allclose(inv, _solve_three_points(dst, src), atol=TOL)
    pts = np.random.default_rng(0).uniform(-50, 500, size=(1, 7, 2))
    back = affine_points(affine_points(pts, got[None]), inv[None]).numpy()
    np.testing.assert_allclose(back, pts, atol=TOL)


def test_affine_transform_is_batched():
    centers = np.array([c for c, _, _, _ in CASES])
    scales = np.array([s for _, s, _, _ in CASES])
    rots = [r for _, _, r, _ in CASES]
    batch = get_affine_transform(centers, scales, rots, (256, 192)).numpy()
    for i in range(len(CASES)):
        one = get_affine_transform(centers[i : i + 1], scales[i : i + 1], [rots[i]], (256, 192))[0].numpy()
        np.testing.assert_allclose(batch[i], one, atol=1e-9)


# --------------------------------------------------------------------------- the crop


def _naive_warp(image: np.ndarray, matrix: np.ndarray, out_hw) -> np.ndarray:
    """dst(x, y) = bilinear src(A^-1 [x, y, 1]), integer pixel centres, zeros outside."""
    img = image.astype(np.float64) / 255.0
    h, w = img.shape[:2]
    a = np.vstack([matrix, [0, 0, 1]])
    a_inv = np.linalg.inv(a)
    out = np.zeros((out_hw[0], out_hw[1], img.shape[2]))

    def pix(yy, xx):
        if 0 <= yy < h and 0 <= xx < w:
            return img[yy, xx]
        return np.zeros(img.shape[2])

    for y in range(out_hw[0]):
        for x in range(out_hw[1]):
            sx, sy, _ = a_inv @ np.array([x, y, 1.0])
            x0, y0 = math.floor(sx), math.floor(sy)
            fx, fy = sx - x0, sy - y0
            out[y, x] = (
                (1 - fx) * (1 - fy) * pix(y0, x0) + fx * (1 - fy) * pix(y0, x0 + 1)
                + (1 - fx) * fy * pix(y0 + 1, x0) + fx * fy * pix(y0 + 1, x0 + 1)
            )
    return out.transpose(2, 0, 1)


def _random_image(h=37, w=53, seed=0):
    return np.random.default_rng(seed).integers(0, 256, size=(h, w, 3), dtype=np.uint8)


CROP_CASES = [
    ((26.0, 18.0), (0.2, 0.25), 0.0),  # inside
    ((5.0, 30.0), (0.3, 0.4), 25.0),  # partly outside, rotated
    ((40.0, 10.0), (0.08, 0.1), -130.0),  # zoom in
    ((-30.0, -30.0), (0.1, 0.1), 10.0),  # entirely outside -> zeros
    ((26.0, 18.0), (0.5, 0.6), 90.0),  # zoom out, the image is small in the crop
]


@pytest.mark.parametrize("center,scale,rot", CROP_CASES)
def test_crop_image_matches_naive_bilinear(center, scale, rot):
    image = _random_image()
    out_hw = (16, 12)
    m = get_affine_transform(np.array([center]), np.array([scale]), [rot], out_hw)[0].numpy()
    expected = _naive_warp(image, m, out_hw)
    got = crop_image(image, m, out_hw)
    assert got.shape == (3, 16, 12) and got.dtype == torch.float32
    np.testing.assert_allclose(got.numpy(), expected, atol=TOL)
    # the same from a (H, W, 3) tensor and a (3, H, W) tensor
    np.testing.assert_allclose(crop_image(torch.from_numpy(image), m, out_hw).numpy(), expected, atol=TOL)
    chw = torch.from_numpy(image).permute(2, 0, 1).contiguous()
    np.testing.assert_allclose(crop_image(chw, m, out_hw).numpy(), expected, atol=TOL)


def test_crop_images_batched_matches_crop_image():
    images = [_random_image(seed=i) for i in range(len(CROP_CASES))]
    out_hw = (20, 15)
    mats = get_affine_transform(
        np.array([c for c, _, _ in CROP_CASES]), np.array([s for _, s, _ in CROP_CASES]), [r for _, _, r in CROP_CASES], out_hw
    )
    batch = torch.stack([torch.from_numpy(im).permute(2, 0, 1).float() / 255 for im in images])
    got = crop_images_batched(batch, mats, out_hw)
    assert got.shape == (len(images), 3, 20, 15)
    for i, im in enumerate(images):
        np.testing.assert_allclose(got[i].numpy(), crop_image(im, mats[i].numpy(), out_hw).numpy(), atol=TOL)


@pytest.mark.gpu
def test_crop_images_batched_on_gpu_matches_cpu():
    if not torch.cuda.is_available():
        pytest.skip("needs a CUDA device")
    images = torch.stack([torch.from_numpy(_random_image(seed=i)).permute(2, 0, 1).float() / 255 for i in range(3)])
    mats = get_affine_transform(np.array([[20.0, 15.0]] * 3), np.array([[0.2, 0.25]] * 3), [0.0, 30.0, -60.0], (32, 24))
    cpu = crop_images_batched(images, mats, (32, 24))
    gpu = crop_images_batched(images.cuda(), mats.cuda(), (32, 24))
    assert gpu.is_cuda
    torch.testing.assert_close(gpu.cpu(), cpu, atol=TOL, rtol=0)


def test_flip_folded_into_matrix_equals_cropping_the_flipped_array():
    from ikd_edu.data.transforms import flip_matrix

    image = _random_image()
    w = image.shape[1]
    c, s, out_hw = np.array([20.0, 15.0]), np.array([0.2, 0.25]), (16, 12)
    c_flip = np.array([w - 1 - c[0], c[1]])
    m = get_affine_transform(c_flip[None], s[None], [15.0], out_hw)[0].numpy()
    expected = _naive_warp(np.ascontiguousarray(image[:, ::-1]), m, out_hw)
    got = crop_image(image, m @ flip_matrix(w), out_hw)
    np.testing.assert_allclose(got.numpy(), expected, atol=TOL)


def test_flip_joints_and_center():
    rng = np.random.default_rng(1)
    joints = rng.uniform(0, 100, size=(17, 3))
    vis = (rng.random(17) > 0.3).astype(float)
    fj, fv = flip_joints(joints, vis, 120, COCO.flip_index)
    pairs = dict(COCO.flip_pairs)
    pairs.update({b: a for a, b in COCO.flip_pairs})
    for k in range(17):
        src = pairs.get(k, k)  # left <-> right, centre joints stay
        np.testing.assert_allclose(fj[k], [120 - 1 - joints[src, 0], joints[src, 1], joints[src, 2]], atol=TOL)
        assert fv[k] == vis[src]
    assert fj.shape == (17, 3)
    # flipping twice is the identity, the input is not modified
    ffj, ffv = flip_joints(fj, fv, 120, COCO.flip_index)
    np.testing.assert_allclose(ffj, joints, atol=TOL)
    np.testing.assert_array_equal(ffv, vis)
    np.testing.assert_allclose(flip_center([30.0, 40.0], 120), [89.0, 40.0], atol=TOL)
    # MPII pairs too, on (K, 2)
    j2 = rng.uniform(0, 50, size=(16, 2))
    f2, _ = flip_joints(j2, np.ones(16), 60, MPII.flip_index)
    np.testing.assert_allclose(f2[0], [59 - j2[5, 0], j2[5, 1]], atol=TOL)  # r_ankle <- l_ankle
    np.testing.assert_allclose(f2[6], [59 - j2[6, 0], j2[6, 1]], atol=TOL)  # pelvis stays


def test_sample_augmentation_ranges_and_rates():
    cfg = AugmentConfig()
    rng = np.random.default_rng(0)
    draws = np.array([sample_augmentation(rng, cfg) for _ in range(4000)], dtype=float)
    s, r, f = draws.T
    assert s.min() >= 0.7 - 1e-12 and s.max() <= 1.3 + 1e-12
    assert np.abs(r).max() <= 80 + 1e-12
    assert abs((r != 0).mean() - 0.6) < 0.04
    assert abs(f.mean() - 0.5) < 0.04
    assert abs(np.std(r[r != 0]) - 40 * 0.96) < 4  # ~N(0, 40) clipped at 2 sigma
    none = AugmentConfig(scale_factor=0.0, rotation_factor=0.0, flip_prob=0.0)
    assert sample_augmentation(rng, none) == (1.0, 0.0, False)


def test_half_body_transform_upper_body():
    joints = np.zeros((17, 2))
    joints[:11] = np.array([[50 + i, 20 + 2 * i] for i in range(11)])  # upper body
    joints[11:] = np.array([[40 + i, 100 + 5 * i] for i in range(6)])  # legs
    vis = np.ones(17)
    vis[11:] = 0  # only the upper body is labelled -> always upper

    class Rng:  # randn -> 0.0 (< 0.5 picks the upper body)
        def standard_normal(self):
            return 0.0

    c, s = half_body_transform(joints, vis, COCO, 0.75, Rng())
    up = joints[:11]
    np.testing.assert_allclose(c, up.mean(0), atol=TOL)
    w, h = up.max(0) - up.min(0)
    w, h = (w, w / 0.75) if w > 0.75 * h else (h * 0.75, h)
    np.testing.assert_allclose(s, [w / 200 * 1.5, h / 200 * 1.5], atol=TOL)
    vis[:] = 0
    vis[:1] = 1  # fewer than 2 selected joints -> no half-body box
    assert half_body_transform(joints, vis, COCO, 0.75, Rng()) == (None, None)


def test_normalize():
    x = torch.rand(3, 4, 5)
    mean, std = torch.tensor([0.485, 0.456, 0.406]), torch.tensor([0.229, 0.224, 0.225])
    torch.testing.assert_close(normalize(x), (x - mean[:, None, None]) / std[:, None, None])


# --------------------------------------------------------------------------- images


@pytest.mark.parametrize("mode,suffix", [("RGB", ".jpg"), ("L", ".png"), ("LA", ".png"), ("RGBA", ".png"),
                                         ("P", ".png"), ("CMYK", ".jpg"), ("L", ".jpg"), ("RGB", ".bmp"),
                                         ("RGBA", ".webp")])
def test_load_rgb_any_mode(tmp_path, mode, suffix):
    rgb = Image.fromarray(_random_image(20, 30))
    im = rgb.convert(mode)
    path = tmp_path / f"im{suffix}"
    im.save(path)
    arr = load_rgb(path)
    assert arr.shape == (20, 30, 3) and arr.dtype == np.uint8
    with Image.open(path) as ref:
        expected = np.asarray(ref.convert("RGB"))
    assert np.abs(arr.astype(int) - expected.astype(int)).max() <= 1


def test_load_rgb_16_bit(tmp_path):
    a = (np.arange(20 * 30).reshape(20, 30) * 100).astype(np.uint16)
    Image.fromarray(a).save(tmp_path / "i16.png")
    arr = load_rgb(tmp_path / "i16.png")
    assert arr.shape == (20, 30, 3) and arr.dtype == np.uint8
    np.testing.assert_allclose(arr[..., 0], np.rint(a / 65535 * 255), atol=1)


def test_load_rgb_errors(tmp_path):
    with pytest.raises(UserError, match="not found") as e:
        load_rgb(tmp_path / "nope.jpg")
    assert isinstance(e.value, FileNotFoundError) and "nope.jpg" in str(e.value)
    Image.fromarray(_random_image(40, 40)).save(tmp_path / "ok.jpg")
    data = (tmp_path / "ok.jpg").read_bytes()
    (tmp_path / "trunc.jpg").write_bytes(data[: len(data) // 2])
    with pytest.raises(UserError, match="trunc.jpg"):
        load_rgb(tmp_path / "trunc.jpg")
    (tmp_path / "text.png").write_text("not an image")
    with pytest.raises(UserError, match="text.png"):
        load_rgb(tmp_path / "text.png")
    (tmp_path / "empty.jpg").write_bytes(b"")
    with pytest.raises(UserError, match="empty"):
        load_rgb(tmp_path / "empty.jpg")


# --------------------------------------------------------------------------- COCO fixtures


def _person(image_id, ann_id, joints_xy, vis, bbox, **extra):
    kps = []
    for (x, y), v in zip(joints_xy, vis):
        kps += [float(x), float(y), int(v)]
    ann = {"id": ann_id, "image_id": image_id, "category_id": 1, "iscrowd": 0, "bbox": list(map(float, bbox)),
           "area": float(bbox[2] * bbox[3]), "num_keypoints": int(sum(v > 0 for v in vis)), "keypoints": kps}
    ann.update(extra)
    return ann


def _standing_person(x0, y0, h):
    """17 COCO joints of an upright figure of height h with its top-left at (x0, y0)."""
    w = h * 0.4
    rel = [(0.5, 0.08), (0.45, 0.06), (0.55, 0.06), (0.4, 0.08), (0.6, 0.08), (0.3, 0.22), (0.7, 0.22),
           (0.2, 0.38), (0.8, 0.38), (0.15, 0.52), (0.85, 0.52), (0.38, 0.55), (0.62, 0.55), (0.37, 0.76),
           (0.63, 0.76), (0.36, 0.97), (0.64, 0.97)]
    return [(x0 + a * w, y0 + b * h) for a, b in rel], [x0, y0, w, h]


def make_coco(root, modes=("RGB", "L", "RGBA", "P"), size=(120, 160)):
    """A tiny COCO keypoint set: one image per PIL mode, 1-2 persons each. Returns (ann_file, image_dir)."""
    h, w = size
    image_dir = root / "images"
    image_dir.mkdir(parents=True, exist_ok=True)
    images, anns = [], []
    for i, mode in enumerate(modes, start=1):
        name = f"{i:012d}." + ("jpg" if mode in ("RGB", "L") else "png")
        Image.fromarray(_random_image(h, w, seed=i)).convert(mode).save(image_dir / name)
        images.append({"id": i, "file_name": name, "width": w, "height": h})
        xy, box = _standing_person(20 + 5 * i, 10, 90)
        vis = [2] * 17
        vis[3] = 1
        vis[4] = 0
        anns.append(_person(i, 10 * i, xy, vis, box))
        xy2, box2 = _standing_person(100, 40, 60)
        anns.append(_person(i, 10 * i + 1, xy2, [2] * 17, box2))
    data = {"images": images, "annotations": anns,
            "categories": [{"id": 1, "name": "person", "keypoints": list(COCO.joints),
                            "skeleton": [[a + 1, b + 1] for a, b in COCO.edges]}]}
    ann_file = root / "person_keypoints.json"
    ann_file.write_text(json.dumps(data))
    return ann_file, image_dir


@pytest.fixture
def tiny_coco(tmp_path):
    return make_coco(tmp_path)


def _need_codec():
    pytest.importorskip("ikd_edu.codec", reason="ikd_edu.codec (heatmap encoder) not written yet")


def _argmax_xy(heatmaps: torch.Tensor) -> np.ndarray:
    k, h, w = heatmaps.shape
    flat = heatmaps.reshape(k, -1).argmax(1)
    return np.stack([(flat % w).numpy(), (flat // w).numpy()], 1).astype(float)


# --------------------------------------------------------------------------- COCO dataset


def test_coco_item_shapes_and_dtypes(tiny_coco):
    _need_codec()
    from ikd_edu.data.coco import TopDownCocoDataset

    ds = TopDownCocoDataset(*tiny_coco)
    assert len(ds) == 8 and ds.num_joints == 17 and ds.skeleton is COCO
    item = ds[0]
    shapes = {"image": (3, 256, 192), "heatmaps": (17, 64, 48), "target_weight": (17,), "center": (2,), "scale": (2,),
              "rotation": (), "joints": (17, 3), "image_id": (), "box_score": (), "area": (), "index": ()}
    for key, shape in shapes.items():
        assert tuple(item[key].shape) == shape, key
    assert item["image"].dtype == torch.float32 and item["heatmaps"].dtype == torch.float32
    assert item["image_id"].dtype == torch.int64 and item["index"].dtype == torch.int64
    # eval item: no augmentation, image normalised, weights = labelled joints
    assert item["rotation"].item() == 0.0
    assert item["image"].min() < -1.0 and item["image"].max() > 1.0
    np.testing.assert_array_equal(item["target_weight"].numpy()[[3, 4, 5]], [1, 0, 1])
    s = item["scale"].numpy()
    assert item["area"].item() == pytest.approx(s[0] * s[1] * 200 * 200, rel=1e-5)
    assert item["gt_area"].item() == pytest.approx(0.4 * 90 * 90, rel=1e-5)
    # default collate works
    batch = next(iter(torch.utils.data.DataLoader(ds, batch_size=4)))
    assert batch["image"].shape == (4, 3, 256, 192) and batch["heatmaps"].shape == (4, 17, 64, 48)
    # grey, RGBA and palette images load as RGB
    for i in range(len(ds)):
        assert ds[i]["image"].shape == (3, 256, 192)
    assert ds.coco.getImgIds() == [1, 2, 3, 4]


def _expected_heatmap_xy(item, image_width, input_hw=(256, 192), heatmap_hw=(64, 48)):
    """Where each joint must peak, from the item's centre/scale/rotation/flip (definition)."""
    joints = item["joints"].numpy().astype(float)
    xy, vis = joints[:, :2], joints[:, 2]
    if bool(item["flipped"]):
        idx = COCO.flip_index
        xy = np.stack([image_width - 1 - xy[idx, 0], xy[idx, 1]], 1)
        vis = vis[idx]
    m = get_affine_transform(item["center"][None].double(), item["scale"][None].double(), item["rotation"][None].double(), input_hw)[0].numpy()
    crop = xy @ m[:, :2].T + m[:, 2]
    stride = np.array([input_hw[1] / heatmap_hw[1], input_hw[0] / heatmap_hw[0]])
    return crop / stride, vis, crop


@pytest.mark.parametrize("augment", [AugmentConfig(), AugmentConfig(half_body_prob=1.0)], ids=["default", "half-body"])
def test_train_augmentation_keeps_joints_on_heatmap_peaks(tiny_coco, augment):
    _need_codec()
    from ikd_edu.data.coco import TopDownCocoDataset

    torch.manual_seed(0)
    ds = TopDownCocoDataset(*tiny_coco, train=True, augment=augment, input_size=(128, 96), heatmap_size=(32, 24))
    seen_flip = seen_rot = n_on = 0
    for rep in range(3):
        for i in range(len(ds)):
            item = ds[i]
            seen_flip += bool(item["flipped"])
            seen_rot += item["rotation"].item() != 0
            hm_xy, vis, crop = _expected_heatmap_xy(item, 160, (128, 96), (32, 24))
            tw = item["target_weight"].numpy()
            np.testing.assert_array_equal(tw, _reference_target_weight(hm_xy, vis, (32, 24)))
            peaks = _argmax_xy(item["heatmaps"])
            # a joint just off the map keeps weight 1 with a partial Gaussian at the border:
            # check the peaks of the joints that are on the map
            on = (tw > 0) & (hm_xy[:, 0] >= 0) & (hm_xy[:, 0] <= 23) & (hm_xy[:, 1] >= 0) & (hm_xy[:, 1] <= 31)
            assert np.all(np.abs(peaks[on] - hm_xy[on]) <= 1.0), (peaks[on], hm_xy[on])
            n_on += on.sum()
    assert seen_flip > 0 and seen_rot > 0 and n_on > 100


def _reference_target_weight(hm_xy, vis, heatmap_hw, sigma=2.0):
    """SimpleBaseline ``JointsDataset.generate_target``'s target_weight, written out per joint.

    Every labelled joint keeps ``target_weight = joints_vis`` (the reference never zeroes a
    joint for leaving the crop); it becomes 0 only when its 3-sigma window misses the map.
    """
    h, w = heatmap_hw
    tmp_size = sigma * 3
    weight = np.zeros(len(vis), dtype=np.float32)
    for k, ((x, y), v) in enumerate(zip(hm_xy, vis)):
        if v <= 0:
            continue
        mu_x, mu_y = int(x + 0.5), int(y + 0.5)  # Python int(): truncation towards zero
        ul = [int(mu_x - tmp_size), int(mu_y - tmp_size)]
        br = [int(mu_x + tmp_size + 1), int(mu_y + tmp_size + 1)]
        weight[k] = 0.0 if (ul[0] >= w or ul[1] >= h or br[0] < 0 or br[1] < 0) else 1.0
    return weight


def _reference_affine(center, scale, rot_deg, out_hw):
    """The reference ``get_affine_transform``: three points, solved in float64 (not via our geometry)."""
    out_h, out_w = out_hw
    src_w = scale[0] * 200.0
    rad = np.pi * rot_deg / 180.0
    sn, cs = np.sin(rad), np.cos(rad)
    src_dir = np.array([0.0 * cs - (src_w * -0.5) * sn, 0.0 * sn + (src_w * -0.5) * cs])
    dst_dir = np.array([0.0, out_w * -0.5])

    def third(a, b):
        d = a - b
        return b + np.array([-d[1], d[0]])

    src0, dst0 = np.asarray(center, float), np.array([out_w * 0.5, out_h * 0.5])
    src = np.stack([src0, src0 + src_dir, third(src0, src0 + src_dir)])
    dst = np.stack([dst0, dst0 + dst_dir, third(dst0, dst0 + dst_dir)])
    a = np.concatenate([src, np.ones((3, 1))], 1)  # (3, 3): [x, y, 1] rows
    return np.linalg.solve(a, dst).T  # (2, 3): dst = M @ [x, y, 1]


def test_target_weights_follow_the_reference_rule_on_augmented_synthetic_samples(synthetic_root):
    """Default target weights == an independent re-implementation of the reference rule.

    Full SimpleBaseline augmentation (scale 0.3, rotation 40, flip) on the synthetic set:
    many labelled joints leave the crop, and those whose 3-sigma window still touches the
    heatmap must keep weight 1 (ikd-edu zeroed them before issue 17: the ``inside-crop``
    option, checked at the end).
    """
    _need_codec()
    from ikd_edu.data.coco import TopDownCocoDataset

    root = synthetic_root
    args = (root / "annotations/person_keypoints_train.json", root / "train")
    kw = dict(train=True, augment=AugmentConfig(), input_size=(128, 96), heatmap_size=(32, 24))
    ds = TopDownCocoDataset(*args, **kw)
    old = TopDownCocoDataset(*args, target_weight_rule="inside-crop", **kw)
    pairs = [(1, 2), (3, 4), (5, 6), (7, 8), (9, 10), (11, 12), (13, 14), (15, 16)]  # COCO flip pairs
    flip_idx = list(range(17))
    for a, b in pairs:
        flip_idx[a], flip_idx[b] = b, a
    outside_kept = compared = 0
    for draw in range(120):  # every person of the fixture, two augmentation draws or more
        i = draw % len(ds)
        torch.manual_seed(1000 + draw)
        item = ds[i]
        joints = item["joints"].numpy().astype(np.float64)
        xy, vis = joints[:, :2].copy(), joints[:, 2].copy()
        if bool(item["flipped"]):  # reference fliplr_joints: mirror x, swap pairs
            xy[:, 0] = 192 - 1 - xy[:, 0]
            xy, vis = xy[flip_idx], vis[flip_idx]
        m = _reference_affine(item["center"].double().numpy(), item["scale"].double().numpy(),
                              float(item["rotation"]), (128, 96))
        crop = xy @ m[:, :2].T + m[:, 2]
        hm_xy = crop / np.array([96 / 24, 128 / 32])
        # float32 centre/scale in the item: skip joints within 1e-3 of a rounding boundary
        frac = (hm_xy + 0.5) % 1.0
        safe = ((frac > 1e-3) & (frac < 1 - 1e-3)).all(1)
        expected = _reference_target_weight(hm_xy, vis, (32, 24))
        tw = item["target_weight"].numpy()
        np.testing.assert_array_equal(tw[safe], expected[safe], err_msg=f"sample {i}")
        compared += int(safe.sum())
        inside = (crop[:, 0] >= 0) & (crop[:, 0] < 96) & (crop[:, 1] >= 0) & (crop[:, 1] < 128)
        outside_kept += int(((tw > 0) & ~inside).sum())
        # the named old rule: additionally zero outside the crop (same augmentation draw)
        torch.manual_seed(1000 + draw)
        old_tw = old[i]["target_weight"].numpy()
        np.testing.assert_array_equal(old_tw[safe], (expected * inside)[safe], err_msg=f"sample {i} (inside-crop)")
    assert compared > 1000
    assert outside_kept > 0  # the rules do differ on these samples, so the test can tell them apart


def test_target_weight_rule_is_checked(tiny_coco):
    from ikd_edu.data.coco import TopDownCocoDataset

    with pytest.raises(UserError, match="target_weight_rule.*inside-crop"):
        TopDownCocoDataset(*tiny_coco, target_weight_rule="inside")


def test_flip_swaps_left_right_channels(tiny_coco):
    _need_codec()
    from ikd_edu.data.coco import TopDownCocoDataset

    still = AugmentConfig(scale_factor=0.0, rotation_factor=0.0, flip_prob=0.0)
    flip = AugmentConfig(scale_factor=0.0, rotation_factor=0.0, flip_prob=1.0)
    a = TopDownCocoDataset(*tiny_coco, train=True, augment=still)[0]
    b = TopDownCocoDataset(*tiny_coco, train=True, augment=flip)[0]
    assert not bool(a["flipped"]) and bool(b["flipped"])
    idx = COCO.flip_index
    # channel k of the flipped crop is joint idx[k] of the plain crop, mirrored: u' = W_in - u
    np.testing.assert_array_equal(b["target_weight"].numpy(), a["target_weight"].numpy()[idx])
    pa, pb = _argmax_xy(a["heatmaps"]), _argmax_xy(b["heatmaps"])
    on = b["target_weight"].numpy() > 0
    assert np.all(np.abs(pb[on, 0] - (48 - pa[idx][on, 0])) <= 1)
    np.testing.assert_array_equal(pb[on, 1], pa[idx][on, 1])
    # the pixels: flipped[..., u] == plain[..., W - u] (the same image points)
    np.testing.assert_allclose(b["image"][:, :, 1:].numpy(), a["image"].flip(-1)[:, :, :-1].numpy(), atol=1e-4)
    # mirrored and swapped: channel 5 (left shoulder) is still on the image-left side
    assert pa[5, 0] < pa[6, 0] and pb[5, 0] < pb[6, 0]


def test_off_crop_joints_get_zero_weight(tmp_path):
    _need_codec()
    from ikd_edu.data.coco import TopDownCocoDataset

    ann_file, image_dir = make_coco(tmp_path, modes=("RGB",))
    data = json.loads(ann_file.read_text())
    ann = data["annotations"][0]
    x, y, w, h = ann["bbox"]
    ann["bbox"] = [x, y, w, h * 0.4]  # box around the head and shoulders only
    ann["area"] = w * h * 0.4
    ann_file.write_text(json.dumps(data))
    item = TopDownCocoDataset(ann_file, image_dir)[0]
    tw = item["target_weight"].numpy()
    assert tw[0] == 1 and tw[15] == 0 and tw[16] == 0  # nose in, ankles far below the crop
    assert item["heatmaps"][15].abs().max() == 0
    assert item["joints"][15, 2] == 2  # the GT itself keeps its label


def test_det_file_records(tiny_coco, tmp_path):
    _need_codec()
    from ikd_edu.data.coco import TopDownCocoDataset

    dets = [
        {"image_id": 1, "category_id": 1, "bbox": [10, 10, 40, 90], "score": 0.9},
        {"image_id": 2, "category_id": 1, "bbox": [50, 20, 30, 60], "score": 0.3},
        {"image_id": 2, "category_id": 1, "bbox": [50, 20, 30, 60], "score": 0.05},  # below threshold
        {"image_id": 3, "category_id": 2, "bbox": [5, 5, 10, 10], "score": 0.99},  # not a person
        {"image_id": 99, "category_id": 1, "bbox": [5, 5, 10, 10], "score": 0.99},  # unknown image
    ]
    det_file = tmp_path / "dets.json"
    det_file.write_text(json.dumps(dets))
    ds = TopDownCocoDataset(*tiny_coco, det_file=det_file, det_score_thresh=0.1)
    assert len(ds) == 2
    item = ds[1]
    assert item["box_score"].item() == pytest.approx(0.3)
    assert item["image_id"].item() == 2
    assert item["joints"].abs().sum() == 0 and item["target_weight"].sum() == 0
    np.testing.assert_allclose(item["center"].numpy(), [65, 50], atol=TOL)
    h = max(60.0, 30 / 0.75)
    np.testing.assert_allclose(item["scale"].numpy(), [h * 0.75 / 200 * 1.25, h / 200 * 1.25], atol=TOL)


def test_image_ids_and_max_instances(tiny_coco):
    from ikd_edu.data.coco import TopDownCocoDataset

    assert len(TopDownCocoDataset(*tiny_coco, image_ids=[2, 3])) == 4
    assert len(TopDownCocoDataset(*tiny_coco, max_instances=3)) == 3


def test_coco_dataset_errors(tiny_coco, tmp_path):
    from ikd_edu.data.coco import TopDownCocoDataset

    ann_file, image_dir = tiny_coco
    with pytest.raises(UserError, match="ikd-edu data synth"):
        TopDownCocoDataset(tmp_path / "missing.json", image_dir)
    with pytest.raises(UserError, match=r"COCO not found at .*nowhere.*cocodataset.org"):
        TopDownCocoDataset(ann_file, tmp_path / "nowhere")
    bad = tmp_path / "bad.json"
    bad.write_text("{not json")
    with pytest.raises(UserError, match="not valid JSON"):
        TopDownCocoDataset(bad, image_dir)
    inst = tmp_path / "instances.json"
    inst.write_text(json.dumps({"images": [{"id": 1, "file_name": "a.jpg", "width": 4, "height": 4}],
                                "annotations": [{"id": 1, "image_id": 1, "category_id": 1, "bbox": [0, 0, 2, 2]}]}))
    with pytest.raises(UserError, match="no keypoints"):
        TopDownCocoDataset(inst, image_dir)
    (tmp_path / "list.json").write_text("[1, 2]")
    with pytest.raises(UserError, match="not a COCO annotation file"):
        TopDownCocoDataset(tmp_path / "list.json", image_dir)


# --------------------------------------------------------------------------- synthetic set


def test_synthetic_set_loads(synthetic_root):
    _need_codec()
    from ikd_edu.data.check import check_coco_keypoints
    from ikd_edu.data.coco import TopDownCocoDataset

    ann = synthetic_root / "annotations" / "person_keypoints_train.json"
    report = check_coco_keypoints(ann, synthetic_root / "train")
    assert report.ok and not report.problems, report.format_table()
    torch.manual_seed(0)
    ds = TopDownCocoDataset(ann, synthetic_root / "train", input_size=(128, 96), heatmap_size=(32, 24), train=True)
    assert len(ds) == report.n_usable_persons
    loader = torch.utils.data.DataLoader(ds, batch_size=8, shuffle=True)
    batch = next(iter(loader))
    assert batch["image"].shape == (8, 3, 128, 96) and batch["heatmaps"].shape == (8, 17, 32, 24)
    for i in range(0, len(ds), max(1, len(ds) // 10)):
        item = ds[i]
        hm_xy, _, _ = _expected_heatmap_xy(item, 192, (128, 96), (32, 24))
        # joints on the map: the reference rule also keeps weight for a joint just off it (window still on the map)
        inside = (hm_xy[:, 0] >= 0) & (hm_xy[:, 0] <= 23) & (hm_xy[:, 1] >= 0) & (hm_xy[:, 1] <= 31)
        on = (item["target_weight"].numpy() > 0) & inside
        assert np.all(np.abs(_argmax_xy(item["heatmaps"])[on] - hm_xy[on]) <= 1.0)


# --------------------------------------------------------------------------- MPII


def test_mpii_sample_file(tmp_path):
    _need_codec()
    from ikd_edu.data.mpii import TopDownMpiiDataset, load_mpii_head_boxes, mpii_head_sizes

    image_dir = tmp_path / "images"
    image_dir.mkdir()
    Image.fromarray(_random_image(300, 400, seed=3)).save(image_dir / "000001163.jpg")
    rng = np.random.default_rng(0)
    joints = rng.uniform(120, 260, size=(16, 2)).round(1)
    vis = [1] * 16
    vis[9] = 0
    entries = [
        {"image": "000001163.jpg", "center": [200.0, 150.0], "scale": 0.9, "joints": joints.tolist(),
         "joints_vis": vis, "head_box": [180, 100, 210, 140]},
        {"image": "000001163.jpg", "center": [100.0, 120.0], "scale": 0.5, "joints": joints.tolist(),
         "joints_vis": [1] * 16, "head_box": [90, 60, 110, 90]},
    ]
    ann = tmp_path / "valid.json"
    ann.write_text(json.dumps(entries))
    ds = TopDownMpiiDataset(ann, image_dir)
    assert len(ds) == 2 and ds.num_joints == 16
    item = ds[0]
    assert item["image"].shape == (3, 256, 256) and item["heatmaps"].shape == (16, 64, 64)
    # reference: centre moved down 15 * scale px, scale x1.25, then 1-based -> 0-based
    np.testing.assert_allclose(item["center"].numpy(), [200 - 1, 150 + 15 * 0.9 - 1], atol=TOL)
    np.testing.assert_allclose(item["scale"].numpy(), [0.9 * 1.25] * 2, atol=TOL)
    np.testing.assert_allclose(item["joints"][:, :2].numpy(), joints - 1, atol=TOL)
    assert item["target_weight"][9] == 0
    boxes = load_mpii_head_boxes(ann)
    np.testing.assert_allclose(boxes, [[180, 100, 210, 140], [90, 60, 110, 90]])
    np.testing.assert_allclose(mpii_head_sizes(boxes), [0.6 * 50.0, 0.6 * math.hypot(20, 30)], atol=TOL)
    (tmp_path / "hb.json").write_text(json.dumps({"head_boxes": [[0, 0, 3, 4]]}))
    np.testing.assert_allclose(mpii_head_sizes(load_mpii_head_boxes(tmp_path / "hb.json")), [3.0], atol=TOL)
    with pytest.raises(UserError, match="MPII not found"):
        TopDownMpiiDataset(tmp_path / "none.json", image_dir)
