"""The synthetic dataset: determinism, COCO validity, label invariants, reuse, CLI."""
from __future__ import annotations

import json
import os

import numpy as np
import pytest
from PIL import Image

from ikd_edu.cli import main as cli
from ikd_edu.data.synthetic import ensure_synthetic, generate_synthetic, make_image, synthetic_matches
from ikd_edu.errors import UserError
from ikd_edu.skeleton import COCO

SPLITS = ("train", "val")


def _ann_bytes(root):
    return {s: (root / "annotations" / f"person_keypoints_{s}.json").read_bytes() for s in SPLITS}


def _load(root, split="train"):
    return json.loads((root / "annotations" / f"person_keypoints_{split}.json").read_text())


def test_same_seed_is_byte_identical_and_seed_matters(tmp_path):
    a, b, c = tmp_path / "a", tmp_path / "b", tmp_path / "c"
    generate_synthetic(a, 12, seed=3, val_images=2, progress=False)
    generate_synthetic(b, 12, seed=3, val_images=2, progress=False)
    generate_synthetic(c, 12, seed=4, val_images=2, progress=False)
    assert _ann_bytes(a) == _ann_bytes(b)
    assert (a / "train" / "000000000007.jpg").read_bytes() == (b / "train" / "000000000007.jpg").read_bytes()
    assert _ann_bytes(a)["train"] != _ann_bytes(c)["train"]
    assert _ann_bytes(a)["val"] != _ann_bytes(c)["val"]


def test_output_does_not_depend_on_worker_count(tmp_path):
    one, two = tmp_path / "one", tmp_path / "two"
    generate_synthetic(one, 6, seed=1, val_images=2, progress=False, workers=1)
    generate_synthetic(two, 6, seed=1, val_images=2, progress=False, workers=2)
    assert _ann_bytes(one) == _ann_bytes(two)


def test_layout_and_meta(synthetic_root):
    for split, n in (("train", 24), ("val", 8)):
        files = sorted(p.name for p in (synthetic_root / split).iterdir())
        assert files == [f"{i:012d}.jpg" for i in range(1, n + 1)]
        with Image.open(synthetic_root / split / files[0]) as im:
            assert im.format == "JPEG" and im.size == (192, 192) and im.mode == "RGB"
    meta = json.loads((synthetic_root / "synth_meta.json").read_text())
    assert meta["seed"] == 0 and meta["num_images"] == {"train": 24, "val": 8}
    assert meta["image_size"] == [192, 192]
    assert meta["counts"]["train"]["images"] == 24


@pytest.mark.parametrize("split", SPLITS)
def test_annotations_are_valid_coco_keypoints(synthetic_root, split):
    from pycocotools.coco import COCO as PyCOCO

    coco = PyCOCO(str(synthetic_root / "annotations" / f"person_keypoints_{split}.json"))
    assert coco.loadCats(1)[0]["keypoints"] == list(COCO.joints)
    for image_id in coco.getImgIds():
        info = coco.loadImgs(image_id)[0]
        W, H = info["width"], info["height"]
        anns = coco.loadAnns(coco.getAnnIds(imgIds=image_id))
        assert 1 <= len(anns) <= 4
        for ann in anns:
            assert ann["category_id"] == 1 and ann["iscrowd"] == 0
            kp = np.asarray(ann["keypoints"], dtype=float).reshape(17, 3)
            assert len(ann["keypoints"]) == 51
            v = kp[:, 2]
            assert set(np.unique(v)) <= {0, 1, 2}
            assert np.all(kp[v == 0, :2] == 0)
            labelled = kp[v > 0]
            assert np.all((labelled[:, 0] >= 0) & (labelled[:, 0] <= W - 1))
            assert np.all((labelled[:, 1] >= 0) & (labelled[:, 1] <= H - 1))
            assert ann["num_keypoints"] == int((v > 0).sum())
            assert (v == 2).any(), "every person has a visible joint"
            x, y, w, h = ann["bbox"]
            assert w > 0 and h > 0 and x >= 0 and y >= 0 and x + w <= W and y + h <= H
            # labelled joints lie in the (amodal, clipped) person box
            assert np.all((labelled[:, 0] >= x - 1) & (labelled[:, 0] <= x + w))
            assert np.all((labelled[:, 1] >= y - 1) & (labelled[:, 1] <= y + h))
            assert 0 < ann["area"] <= w * h


def test_occlusion_and_truncation_occur(synthetic_root):
    kp = np.array([a["keypoints"] for a in _load(synthetic_root)["annotations"]]).reshape(-1, 17, 3)
    v = kp[..., 2]
    assert (v == 1).mean() > 0.05, "some joints are hidden behind people / occluders"
    assert (v == 0).any(), "some joints fall outside the image"
    assert (v == 2).mean() > 0.5


def test_left_limbs_are_lighter_than_right_limbs(synthetic_root):
    """The left/right cue: sample pixels mid-way along visible limbs of every person."""
    coco = _load(synthetic_root)
    limbs = {"left": ((5, 7), (7, 9), (11, 13), (13, 15)), "right": ((6, 8), (8, 10), (12, 14), (14, 16))}
    means = {"left": [], "right": []}
    by_image = {}
    for ann in coco["annotations"]:
        by_image.setdefault(ann["image_id"], []).append(ann)
    for info in coco["images"]:
        image = np.asarray(Image.open(synthetic_root / "train" / info["file_name"]).convert("L"), dtype=float)
        for ann in by_image[info["id"]]:
            kp = np.asarray(ann["keypoints"], dtype=float).reshape(17, 3)
            for side, pairs in limbs.items():
                for a, b in pairs:
                    if kp[a, 2] == 2 and kp[b, 2] == 2:
                        for t in (0.35, 0.5, 0.65):
                            x, y = kp[a, :2] * (1 - t) + kp[b, :2] * t
                            means[side].append(image[int(round(y)), int(round(x))])
    assert len(means["left"]) > 50 and len(means["right"]) > 50
    assert np.mean(means["left"]) > np.mean(means["right"]) + 30


def test_make_image_is_deterministic_and_has_people():
    image_a, persons_a = make_image(5, "val", 3)
    image_b, persons_b = make_image(5, "val", 3)
    assert image_a.shape == (192, 192, 3) and image_a.dtype == np.uint8
    assert np.array_equal(image_a, image_b)
    assert 1 <= len(persons_a) <= 4
    assert all(np.array_equal(p["keypoints"], q["keypoints"]) for p, q in zip(persons_a, persons_b))
    image_c, _ = make_image(5, "val", 3, image_size=(128, 160))
    assert image_c.shape == (128, 160, 3)


def test_ensure_synthetic_reuses_and_regenerates(tmp_path):
    root = tmp_path / "set"
    ensure_synthetic(root, 4, seed=0, val_images=1, progress=False)
    ann = root / "annotations" / "person_keypoints_train.json"
    image = root / "train" / "000000000001.jpg"
    old = 1_000_000_000  # set an old mtime: a rewrite would change it
    os.utime(ann, (old, old))
    os.utime(image, (old, old))
    assert synthetic_matches(root, 4, seed=0, val_images=1)
    assert ensure_synthetic(root, 4, seed=0, val_images=1, progress=False) == root
    assert ann.stat().st_mtime == old and image.stat().st_mtime == old
    # a different seed, count or a missing image all regenerate
    ensure_synthetic(root, 4, seed=1, val_images=1, progress=False)
    assert ann.stat().st_mtime != old
    assert json.loads((root / "synth_meta.json").read_text())["seed"] == 1
    ensure_synthetic(root, 3, seed=1, val_images=1, progress=False)
    assert len(list((root / "train").glob("*.jpg"))) == 3
    (root / "train" / "000000000002.jpg").unlink()
    assert not synthetic_matches(root, 3, seed=1, val_images=1)
    ensure_synthetic(root, 3, seed=1, val_images=1, progress=False)
    assert (root / "train" / "000000000002.jpg").is_file()


def test_bad_arguments_raise_user_error(tmp_path):
    with pytest.raises(UserError, match=">= 1"):
        generate_synthetic(tmp_path / "x", 0, progress=False)
    with pytest.raises(UserError, match="validation"):
        generate_synthetic(tmp_path / "x", 3, val_images=0, progress=False)
    with pytest.raises(UserError, match="seed"):
        generate_synthetic(tmp_path / "x", 3, seed=-1, progress=False)
    with pytest.raises(UserError, match="image size"):
        generate_synthetic(tmp_path / "x", 3, image_size=(10, 10), progress=False)
    blocker = tmp_path / "file"
    blocker.write_text("not a folder")
    with pytest.raises(UserError, match="cannot write"):
        generate_synthetic(blocker / "sub", 3, progress=False)


def test_cli_generates_and_reuses(tmp_path, capsys):
    out = tmp_path / "cli"
    argv = ["data", "synth", "--out", str(out), "--images", "3", "--val-images", "1", "--seed", "2",
            "--size", "128x160", "--quiet"]
    assert cli(argv) == 0
    assert "train: 3 images" in capsys.readouterr().out
    coco = _load(out, "val")
    assert coco["images"][0]["height"] == 128 and coco["images"][0]["width"] == 160
    assert cli(argv) == 0
    assert "reusing" in capsys.readouterr().out


def test_cli_bad_arguments_exit_2(tmp_path, capsys):
    assert cli(["data", "synth", "--out", str(tmp_path / "o"), "--images", "0", "--quiet"]) == 2
    assert "error" in capsys.readouterr().err
    with pytest.raises(SystemExit) as exc:
        cli(["data", "synth", "--out", str(tmp_path / "o"), "--images", "2", "--size", "big"])
    assert exc.value.code == 2
    assert "HxW" in capsys.readouterr().err
    with pytest.raises(SystemExit) as exc:
        cli(["data", "synth", "--images", "2"])
    assert exc.value.code == 2
