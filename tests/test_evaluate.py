"""Tests for ikd_edu.evaluate: OKS, OKS-NMS, rescoring, COCO AP (pycocotools), PCKh, CLI.

Expected values come from the definitions (COCO's OKS formula, the reference rescoring,
MPII's PCKh), computed here independently of the code under test.
"""
from __future__ import annotations

import copy
import json
import math

import numpy as np
import pytest

from ikd_edu import evaluate as ev
from ikd_edu.errors import UserError
from ikd_edu.skeleton import COCO, MPII, coco_category

K = 17
SIGMAS = [0.026, 0.025, 0.025, 0.035, 0.035, 0.079, 0.079, 0.072, 0.072,
          0.062, 0.062, 0.107, 0.107, 0.087, 0.087, 0.089, 0.089]  # COCO, typed from the paper
AREA = 15000.0  # every person "large" (> 96^2)
THRESHOLDS = np.linspace(0.5, 0.95, 10)


def make_gt(num_images: int = 3, persons: int = 2, seed: int = 0) -> dict:
    """A tiny COCO keypoint file: persons 250 px apart, all 17 joints labelled (v=2)."""
    rng = np.random.default_rng(seed)
    images, anns = [], []
    for img in range(1, num_images + 1):
        images.append({"id": img, "file_name": f"{img:012d}.jpg", "width": 640, "height": 480})
        for p in range(persons):
            x0, y0 = 20.0 + 250.0 * p, 40.0
            xy = np.stack([x0 + rng.uniform(0, 100, K), y0 + rng.uniform(0, 150, K)], 1)
            kps = np.concatenate([xy, np.full((K, 1), 2.0)], 1)
            anns.append({
                "id": len(anns) + 1, "image_id": img, "category_id": 1, "iscrowd": 0,
                "area": AREA, "bbox": [x0, y0, 100.0, 150.0],
                "keypoints": [float(v) for v in kps.reshape(-1)], "num_keypoints": K,
            })
    return {"images": images, "annotations": anns, "categories": [coco_category(COCO)]}


def gt_as_results(gt: dict, shift=(0.0, 0.0)) -> list[dict]:
    out = []
    for i, a in enumerate(gt["annotations"]):
        kps = np.asarray(a["keypoints"], dtype=np.float64).reshape(K, 3).copy()
        kps[:, 0] += shift[0]
        kps[:, 1] += shift[1]
        kps[:, 2] = 1.0
        out.append({"image_id": a["image_id"], "category_id": 1,
                    "keypoints": [float(v) for v in kps.reshape(-1)], "score": 1.0 - 0.01 * i})
    return out


def write(path, obj):
    path.write_text(json.dumps(obj))
    return path


def closed_form_oks(d: float, area: float) -> float:
    """Every joint off by d px, all labelled: mean_k exp(-d^2 / (2 area (2 sigma_k)^2))."""
    return float(np.mean([math.exp(-d * d / (2 * area * (2 * s) ** 2)) for s in SIGMAS]))


# ---------------------------------------------------------------- COCO AP
def test_ground_truth_as_predictions_scores_one(tmp_path):
    gt = make_gt()
    ann = write(tmp_path / "gt.json", gt)
    m = ev.coco_keypoint_eval(ann, gt_as_results(gt))
    assert set(m) == {"AP", "AP50", "AP75", "APM", "APL", "AR", "AR50", "AR75", "ARM", "ARL"}
    for key in ("AP", "AP50", "AP75", "APL", "AR", "AR50", "AR75", "ARL"):
        assert m[key] == pytest.approx(1.0), key
    assert m["APM"] == -1.0  # no medium-sized GT: pycocotools' "undefined"


@pytest.mark.parametrize("d", [4.0, 9.0])
def test_jittered_predictions_match_closed_form(tmp_path, d):
    gt = make_gt()
    ann = write(tmp_path / "gt.json", gt)
    # offset (d/sqrt2, d/sqrt2): distance d for every joint
    results = gt_as_results(gt, shift=(d / math.sqrt(2), d / math.sqrt(2)))
    o = closed_form_oks(d, AREA)
    assert np.abs(THRESHOLDS - o).min() > 0.005, "pick d away from a threshold"
    expected_ap = float(np.mean(o >= THRESHOLDS))
    assert 0.0 < expected_ap < 1.0
    m = ev.coco_keypoint_eval(ann, results)
    assert m["AP"] == pytest.approx(expected_ap, abs=1e-9)
    assert m["AR"] == pytest.approx(expected_ap, abs=1e-9)
    assert m["AP50"] == pytest.approx(float(o >= 0.5))
    assert m["AP75"] == pytest.approx(float(o >= 0.75))
    # the per-instance helper agrees with the closed form
    a = gt["annotations"][0]
    g = np.asarray(a["keypoints"]).reshape(K, 3)
    pred = np.asarray(results[0]["keypoints"]).reshape(K, 3)[:, :2]
    assert ev.instance_oks(g, AREA, pred) == pytest.approx(o, abs=1e-12)


def test_crowd_and_unlabelled_ground_truth_are_ignored(tmp_path):
    gt = make_gt()
    results = gt_as_results(gt, shift=(3.0, 0.0))
    base = ev.coco_keypoint_eval(write(tmp_path / "base.json", gt), results)

    extra_gt = copy.deepcopy(gt)
    crowd_xy = np.stack([np.linspace(520, 600, K), np.linspace(300, 420, K)], 1)
    crowd_kps = np.concatenate([crowd_xy, np.full((K, 1), 2.0)], 1).reshape(-1)
    extra_gt["annotations"].append({
        "id": 1000, "image_id": 1, "category_id": 1, "iscrowd": 1, "area": AREA,
        "bbox": [520.0, 300.0, 80.0, 120.0], "keypoints": [float(v) for v in crowd_kps],
        "num_keypoints": K,
    })
    extra_gt["annotations"].append({  # a person box with no labelled joint
        "id": 1001, "image_id": 2, "category_id": 1, "iscrowd": 0, "area": AREA,
        "bbox": [520.0, 300.0, 80.0, 120.0], "keypoints": [0.0] * (3 * K), "num_keypoints": 0,
    })
    on_crowd = {"image_id": 1, "category_id": 1, "score": 0.999,
                "keypoints": [float(v) for v in crowd_kps]}
    inside_box = np.concatenate([np.full((K, 1), 560.0), np.full((K, 1), 360.0), np.ones((K, 1))], 1)
    on_unlabelled = {"image_id": 2, "category_id": 1, "score": 0.998,
                     "keypoints": [float(v) for v in inside_box.reshape(-1)]}
    extra_results = results + [on_crowd, on_unlabelled]

    with_ignored = ev.coco_keypoint_eval(write(tmp_path / "crowd.json", extra_gt), extra_results)
    assert with_ignored["AP"] == pytest.approx(base["AP"])
    assert with_ignored["AR"] == pytest.approx(base["AR"])
    # ...while the same top-scored predictions without those GT are false positives
    without = ev.coco_keypoint_eval(write(tmp_path / "base2.json", gt), extra_results)
    assert without["AP"] < base["AP"] - 0.01


def test_empty_results_score_zero(tmp_path):
    m = ev.coco_keypoint_eval(write(tmp_path / "gt.json", make_gt()), [])
    assert all(v == 0.0 for v in m.values())


def test_results_are_not_mutated_and_coco_object_accepted(tmp_path):
    from pycocotools.coco import COCO as CocoApi

    gt = make_gt(num_images=1)
    coco = CocoApi()
    coco.dataset = gt
    coco.createIndex()
    results = gt_as_results(gt)
    snapshot = copy.deepcopy(results)
    assert ev.coco_keypoint_eval(coco, results)["AP"] == pytest.approx(1.0)
    assert results == snapshot


@pytest.mark.parametrize(
    "mutate, words",
    [
        (lambda r: r[0].update(keypoints=r[0]["keypoints"][:-3]), "48 keypoint values, expected 51"),
        (lambda r: r[0].update(image_id=999), "not in the annotation file"),
        (lambda r: r[0].pop("score"), "lacks ['score']"),
        (lambda r: r[0]["keypoints"].__setitem__(0, float("nan")), "NaN"),
    ],
)
def test_bad_results_raise_user_error(tmp_path, mutate, words):
    gt = make_gt(num_images=1)
    results = gt_as_results(gt)
    mutate(results)
    with pytest.raises(UserError) as info:
        ev.coco_keypoint_eval(write(tmp_path / "gt.json", gt), results)
    assert words in str(info.value)


# ---------------------------------------------------------------- OKS
def test_oks_matches_pycocotools_compute_oks():
    from pycocotools.coco import COCO as CocoApi
    from pycocotools.cocoeval import COCOeval

    rng = np.random.default_rng(1)
    gt = make_gt(num_images=1, persons=3, seed=2)
    anns = gt["annotations"]
    anns[0]["area"] = 3000.0
    anns[1]["area"] = 40000.0
    kp1 = np.asarray(anns[1]["keypoints"]).reshape(K, 3)
    kp1[rng.choice(K, 6, replace=False), 2] = 0  # some unlabelled joints
    kp1[:3, 2] = 1
    anns[1]["keypoints"] = kp1.reshape(-1).tolist()
    anns[2]["keypoints"] = [0.0] * (3 * K)  # no labelled joint: box distance path
    anns[2]["num_keypoints"] = 0

    gt_kps = np.stack([np.asarray(a["keypoints"]).reshape(K, 3) for a in anns])  # (M, K, 3)
    # predictions: noisy copies of each GT (the unlabelled one: some inside, some outside its box)
    preds = []
    for m in range(3):
        for noise in (2.0, 8.0, 25.0):
            if m < 2:
                base = gt_kps[m, :, :2]
            else:  # around the box centre (all inside: OKS 1), then spread beyond the grown box
                base = np.asarray(anns[2]["bbox"][:2]) + [50.0, 75.0] + rng.uniform(-20, 20, (K, 2)) * noise
            preds.append(base + rng.normal(0, noise, (K, 2)))
    preds = np.stack(preds)  # (N, K, 2)
    scores = rng.permutation(len(preds)) / len(preds) + 0.01
    results = [{"image_id": 1, "category_id": 1, "score": float(s),
                "keypoints": np.concatenate([p, np.ones((K, 1))], 1).reshape(-1).tolist()}
               for p, s in zip(preds, scores)]

    coco_gt = CocoApi()
    coco_gt.dataset = gt
    import contextlib
    import io

    with contextlib.redirect_stdout(io.StringIO()):
        coco_gt.createIndex()
        coco_dt = coco_gt.loadRes(copy.deepcopy(results))
    e = COCOeval(coco_gt, coco_dt, iouType="keypoints")
    e.params.kpt_oks_sigmas = np.asarray(SIGMAS)
    e._prepare()
    reference = e.computeOks(1, 1)  # rows: detections sorted by descending score

    order = np.argsort(-scores, kind="mergesort")
    areas = np.asarray([a["area"] for a in anns])
    boxes = np.asarray([a["bbox"] for a in anns])
    ours = ev.oks(gt_kps, areas, preds[order], gt_boxes=boxes)
    assert ours.shape == reference.shape == (9, 3)
    assert reference[:, :2].max() > 0.5 and reference[:, 2].max() == 1.0 and reference[:, 2].min() < 0.5  # the test exercises both paths
    np.testing.assert_allclose(ours, reference, atol=1e-6)
    # without boxes a GT with no labelled joint scores 0 (documented)
    np.testing.assert_array_equal(ev.oks(gt_kps, areas, preds)[:, 2], 0.0)
    # torch input works too
    torch = pytest.importorskip("torch")
    np.testing.assert_allclose(ev.oks(torch.tensor(gt_kps), torch.tensor(areas), torch.tensor(preds[order]),
                                      gt_boxes=boxes), reference, atol=1e-6)


# ---------------------------------------------------------------- NMS + rescoring
def _person(x0, y0, rng):
    return np.stack([x0 + rng.uniform(0, 80, K), y0 + rng.uniform(0, 120, K), np.ones(K)], 1)


def test_oks_nms_removes_near_duplicate_keeps_distinct():
    rng = np.random.default_rng(3)
    a = _person(0, 0, rng)
    dup = a.copy()
    dup[:, :2] += 0.5  # OKS with a: ~0.99 > 0.9
    b = _person(300, 0, rng)  # far away: OKS ~0
    kps = np.stack([dup, b, a])
    scores = np.array([0.8, 0.7, 0.9])
    areas = np.full(3, 9600.0)
    assert ev.oks_nms(kps, scores, areas, threshold=0.9) == [2, 1]
    assert ev.oks_nms(kps, scores, areas, threshold=1.0) == [2, 0, 1]  # nothing exceeds 1
    assert ev.oks_nms(np.zeros((0, K, 3)), np.zeros(0), np.zeros(0)) == []


def test_rescoring_and_results_format():
    maxvals = np.full((3, K), 0.1)
    maxvals[0, :4] = [0.9, 0.5, 0.3, 0.2]  # 0.2 is not > 0.2
    maxvals[2, :] = 0.6
    box_scores = np.array([0.8, 0.9, 0.5])
    expected = [0.8 * (0.9 + 0.5 + 0.3) / 3, 0.0, 0.5 * 0.6]
    np.testing.assert_allclose(ev.rescore(maxvals, box_scores), expected)

    rng = np.random.default_rng(4)
    p = _person(0, 0, rng)[:, :2]
    keypoints = np.stack([p, p + 0.25, p])  # 0 and 1 near-duplicates, 2 a copy in another image
    image_ids = np.array([7, 7, 9])
    res = ev.keypoints_to_coco_results(image_ids, keypoints, maxvals, box_scores, np.full(3, 9600.0))
    assert [r["image_id"] for r in res] == [7, 9]  # instance 1 suppressed by instance 0
    first = res[0]
    assert set(first) == {"image_id", "category_id", "keypoints", "score"}
    assert first["category_id"] == 1 and first["score"] == pytest.approx(expected[0])
    flat = np.asarray(first["keypoints"]).reshape(K, 3)
    np.testing.assert_allclose(flat[:, :2], p)
    np.testing.assert_allclose(flat[:, 2], maxvals[0])
    json.dumps(res)  # plain Python types
    no_nms = ev.keypoints_to_coco_results(image_ids, keypoints, maxvals, box_scores,
                                          np.full(3, 9600.0), oks_nms_thresh=None)
    assert len(no_nms) == 3


# ---------------------------------------------------------------- PCKh
def test_pckh_constructed_example():
    kj = MPII.num_joints  # 16; pelvis 6, thorax 7
    head_boxes = np.array([[0.0, 0.0, 30.0, 40.0], [0.0, 0.0, 60.0, 80.0]])  # diagonals 50, 100
    sizes = ev.head_size_from_box(head_boxes)
    np.testing.assert_allclose(sizes, [30.0, 60.0])  # 0.6 x diagonal
    gt = np.zeros((2, kj, 2))
    # error in head sizes per joint; joint j of person n off by err[n, j] * size_n along x
    err = np.tile(np.array([0.05, 0.3, 0.7, 0.5, 0.05, 0.3, 0.9, 0.9,
                            0.05, 0.3, 0.7, 0.05, 0.3, 0.7, 0.05, 0.3]), (2, 1))
    err[1, 0] = 0.6
    pred = gt.copy()
    pred[..., 0] = err * sizes[:, None]
    visible = np.ones((2, kj))
    visible[1, 1] = 0  # not annotated: not counted
    out = ev.pckh(pred, gt, visible, sizes, threshold=0.5)
    # per joint, by hand: correct iff err <= 0.5 among visible
    exp_joint = []
    for j in range(kj):
        vis = visible[:, j] > 0
        exp_joint.append(100.0 * np.sum((err[:, j] <= 0.5) & vis) / vis.sum())
    np.testing.assert_allclose(out["per_joint"], exp_joint)
    assert out["per_joint"][0] == 50.0 and out["per_joint"][1] == 100.0 and out["per_joint"][3] == 100.0
    keep = [j for j in range(kj) if j not in (6, 7)]  # mean leaves out pelvis, thorax
    correct = sum(np.sum((err[:, j] <= 0.5) & (visible[:, j] > 0)) for j in keep)
    total = sum(visible[:, j].sum() for j in keep)
    assert out["mean"] == pytest.approx(100.0 * correct / total)
    assert out["counts"][1] == 1 and out["joints"][6] == "pelvis"
    at_01 = ev.pckh(pred, gt, visible, sizes, threshold=0.1)
    correct01 = sum(np.sum((err[:, j] <= 0.1) & (visible[:, j] > 0)) for j in keep)
    assert at_01["mean"] == pytest.approx(100.0 * correct01 / total)
    all_joints = ev.pckh(pred, gt, visible, sizes, mean_excludes=())
    assert all_joints["mean"] < out["mean"]  # pelvis/thorax (0.9 off) now drag it down
    with pytest.raises(UserError):
        ev.pckh(pred, gt, visible, np.array([30.0, 0.0]))


# ---------------------------------------------------------------- CLI
def test_cli_eval_writes_json(tmp_path, capsys):
    from ikd_edu.cli import main

    gt = make_gt()
    ann = write(tmp_path / "gt.json", gt)
    res = write(tmp_path / "res.json", gt_as_results(gt))
    out = tmp_path / "sub" / "metrics.json"
    assert main(["eval", "--ann", str(ann), "--results", str(res), "--out", str(out)]) == 0
    metrics = json.loads(out.read_text())
    assert metrics["AP"] == pytest.approx(1.0)
    printed = capsys.readouterr().out
    assert "AP50" in printed and "100.0" in printed
    assert "Average Precision" not in printed  # pycocotools' chatter stays hidden


@pytest.mark.parametrize("kind", ["not-json", "short-keypoints", "missing-ann"])
def test_cli_bad_input_one_line_exit_2(tmp_path, capsys, kind):
    from ikd_edu.cli import main

    gt = make_gt(num_images=1)
    ann = write(tmp_path / "gt.json", gt)
    res = tmp_path / "res.json"
    if kind == "not-json":
        res.write_text("{this is not json")
    else:
        results = gt_as_results(gt)
        if kind == "short-keypoints":
            results[1]["keypoints"] = results[1]["keypoints"][:39]
        write(res, results)
    if kind == "missing-ann":
        ann = tmp_path / "nope.json"
    out = tmp_path / "m.json"
    code = main(["eval", "--ann", str(ann), "--results", str(res), "--out", str(out)])
    err = capsys.readouterr().err
    assert code == 2
    assert err.startswith("ikd-edu: error:") and err.count("\n") == 1, err
    assert "Traceback" not in err
    assert not out.exists()
