"""``ikd-edu data check``: every malformed input gives a counted skip or a one-line error."""
from __future__ import annotations

import json

import numpy as np
import pytest
from PIL import Image

from ikd_edu.cli import main
from ikd_edu.data.check import check_coco_keypoints
from ikd_edu.data.coco import TopDownCocoDataset
from ikd_edu.errors import UserError
from ikd_edu.skeleton import COCO


def _kps(n=17, x=30.0, y=40.0, v=2):
    out = []
    for k in range(n):
        out += [x + k, y + k, v]
    return out


def _ann(aid, image_id, kps=None, bbox=(20, 30, 40, 60), **extra):
    ann = {"id": aid, "image_id": image_id, "category_id": 1, "iscrowd": 0, "bbox": list(bbox),
           "area": float(bbox[2] * bbox[3]) if all(isinstance(b, (int, float)) for b in bbox) else 1.0,
           "keypoints": _kps() if kps is None else kps, "num_keypoints": 17}
    ann.update(extra)
    return ann


def _write_images(image_dir, specs):
    """specs: list of (file_name, mode) -> written 100x80 (H x W) images."""
    image_dir.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(0)
    for name, mode in specs:
        arr = rng.integers(0, 256, size=(100, 80, 3), dtype=np.uint8)
        Image.fromarray(arr).convert(mode).save(image_dir / name)


def _write(path, data):
    path.write_text(json.dumps(data))  # json.dumps writes NaN for float('nan'), as some tools do
    return path


@pytest.fixture
def messy(tmp_path):
    """One good person per image kind, plus one of every kind of bad record."""
    image_dir = tmp_path / "images"
    _write_images(image_dir, [("1.jpg", "RGB"), ("2.png", "L"), ("3.png", "RGBA"), ("4.png", "P"), ("5.jpg", "RGB")])
    data = (tmp_path / "images" / "5.jpg").read_bytes()
    (image_dir / "5.jpg").write_bytes(data[: len(data) // 3])  # truncated
    images = [{"id": i, "file_name": f"{i}.{'jpg' if i in (1, 5) else 'png'}", "width": 80, "height": 100} for i in range(1, 6)]
    images.append({"id": 6, "file_name": "6.jpg", "width": 80, "height": 100})  # file missing
    nan = float("nan")
    anns = [
        _ann(1, 1), _ann(2, 2), _ann(3, 3), _ann(4, 4),  # good, on RGB / L / RGBA / P images
        _ann(5, 1, bbox=(10, 10, 0, 20)),  # zero-area box
        _ann(6, 1, bbox=(10, 10, -5, 20)),  # negative box
        _ann(7, 1, kps=_kps(x=75.0)),  # keypoints run past x = 80
        _ann(8, 1, kps=_kps()[:-3] + [nan, 3.0, 2]),  # NaN coordinate
        _ann(9, 1, kps=_kps(n=16)),  # wrong keypoint count
        _ann(10, 42),  # unknown image
        _ann(11, 5),  # corrupt image file
        _ann(12, 6),  # missing image file
        _ann(13, 1, bbox=(nan, 1, 2, 3)),  # NaN box
        _ann(14, 1, iscrowd=1),  # crowd: skipped by convention
        _ann(15, 1, kps=_kps(v=0)),  # no labelled joint: skipped by convention
        _ann(16, 1, category_id=2),  # not a person
        _ann(17, 1, kps=["a"] * 51),  # non-numeric
        _ann(18, 1, bbox=(90, 5, 10, 10)),  # box starts right of the 80-px image
        "not an object",
    ]
    ann_file = _write(tmp_path / "person_keypoints.json", {
        "images": images, "annotations": anns,
        "categories": [{"id": 1, "name": "person", "keypoints": list(COCO.joints), "skeleton": []}]})
    return ann_file, image_dir


def test_report_counts_every_kind_of_problem(messy):
    ann_file, image_dir = messy
    r = check_coco_keypoints(ann_file, image_dir)
    assert r.ok and r.n_images == 6 and r.n_persons == 19
    assert r.n_usable_persons == 4
    assert r.problems == {
        "zero-area or negative box": 2,
        "labelled keypoints outside the image": 1,
        "NaN/inf keypoint coordinates": 1,
        "wrong keypoint count (expected 51 numbers)": 1,
        "annotation for unknown image": 1,
        "image file corrupt or unreadable": 1,
        "image file missing": 1,
        "NaN/inf bbox": 1,
        "non-numeric keypoints": 1,
        "annotation is not a JSON object": 1,
        "box outside the image": 1,
    }
    assert r.skipped == {"crowd (iscrowd=1)": 1, "no labelled joint": 1, "not a person": 1}
    assert any("6.jpg" in e for e in r.examples["image file missing"])
    assert any("annotation id 10" in e for e in r.examples["annotation for unknown image"])
    np.testing.assert_array_equal(r.labelled_per_joint, [4] * 17)
    assert any("loaded as RGB" in n for n in r.notes)  # L / RGBA / P images are fine
    table = r.format_table()
    for word in ("left_shoulder", "usable persons: 4", "image file missing", "crowd"):
        assert word in table
    # header-only and existence-only checks cannot see the truncated file
    assert check_coco_keypoints(ann_file, image_dir, verify_images="header").n_usable_persons == 5
    assert check_coco_keypoints(ann_file, image_dir, verify_images=False).n_usable_persons == 5
    assert check_coco_keypoints(ann_file).n_usable_persons == 6  # annotations only


def test_dataset_skips_exactly_what_the_check_reports(messy):
    ann_file, image_dir = messy
    ds = TopDownCocoDataset(ann_file, image_dir)
    r = check_coco_keypoints(ann_file)  # annotation-level: the same filter
    assert len(ds) == r.n_usable_persons == 6
    assert sorted(ds.persons.ann_ids.tolist()) == [1, 2, 3, 4, 11, 12]
    assert ds.persons.problems == r.problems
    missing = int(np.flatnonzero(ds.rec_image_id == 6)[0])
    with pytest.raises(UserError, match="6.jpg"):  # the image-level problems surface on load
        ds[missing]


def test_cli_check_table_and_json(messy, capsys):
    ann_file, image_dir = messy
    assert main(["data", "check", str(ann_file), "--images", str(image_dir)]) == 1  # images training would stop at
    out = capsys.readouterr().out
    assert "left_ankle" in out and "zero-area or negative box" in out
    assert main(["data", "check", str(ann_file), "--images", str(image_dir), "--json"]) == 1
    rep = json.loads(capsys.readouterr().out)
    assert rep["n_usable_persons"] == 4 and rep["problems"]["image file missing"] == 1
    assert rep["labelled_per_joint"]["nose"] == 4


def _bad_inputs(tmp_path):
    good_image = {"id": 1, "file_name": "1.jpg", "width": 80, "height": 100}
    (tmp_path / "notjson.json").write_text("{oops")
    (tmp_path / "binary.json").write_bytes(b"\xff\xd8\xff\xe0\x00\x10JFIF\x00\x01\xff\xfe")
    (tmp_path / "empty.json").write_text("")
    _write(tmp_path / "list.json", [1, 2, 3])
    _write(tmp_path / "noanns.json", {"images": [good_image]})
    _write(tmp_path / "emptyanns.json", {"images": [good_image], "annotations": []})
    _write(tmp_path / "instances.json", {"images": [good_image],
                                         "annotations": [{"id": 1, "image_id": 1, "category_id": 1, "bbox": [1, 2, 3, 4]}]})
    _write(tmp_path / "unlabelled.json", {"images": [good_image], "annotations": [_ann(1, 1, kps=_kps(v=0))]})
    _write(tmp_path / "allbad.json", {"images": [good_image], "annotations": [_ann(1, 1, bbox=(0, 0, 0, 0)), _ann(2, 7)]})
    _write(tmp_path / "wrongk.json", {"images": [good_image], "annotations": [_ann(1, 1)],
                                      "categories": [{"id": 1, "name": "person", "keypoints": ["a"] * 16}]})
    return {
        "notjson.json": "not valid JSON",
        "binary.json": "not a text file",
        "empty.json": "not valid JSON",
        "list.json": "not a COCO annotation file",
        "noanns.json": "no 'annotations'",
        "emptyanns.json": "has no annotations",
        "instances.json": "no keypoints",
        "unlabelled.json": "no usable person",
        "allbad.json": "no usable person",
        "wrongk.json": "16 keypoints",
        "missing.json": "COCO not found",
    }


def test_cli_unusable_files_exit_2_with_one_line(tmp_path, capsys):
    image_dir = tmp_path / "images"
    _write_images(image_dir, [("1.jpg", "RGB")])
    for name, message in _bad_inputs(tmp_path).items():
        code = main(["data", "check", str(tmp_path / name), "--images", str(image_dir)])
        captured = capsys.readouterr()
        assert code == 2, name
        err_lines = captured.err.strip().splitlines()
        assert len(err_lines) == 1 and err_lines[0].startswith("ikd-edu: error:"), (name, captured.err)
        assert message in err_lines[0], (name, err_lines[0])
        assert "Traceback" not in captured.out + captured.err


def test_cli_missing_image_dir(messy, tmp_path, capsys):
    ann_file, _ = messy
    assert main(["data", "check", str(ann_file), "--images", str(tmp_path / "nope")]) == 2
    err = capsys.readouterr().err
    assert "COCO not found at" in err and "ikd-edu data synth" in err and "Traceback" not in err


def test_check_synthetic_set_is_clean(synthetic_root, capsys):
    ann = synthetic_root / "annotations" / "person_keypoints_val.json"
    assert main(["data", "check", str(ann), "--images", str(synthetic_root / "val")]) == 0
    out = capsys.readouterr().out
    assert "problems found: none" in out
