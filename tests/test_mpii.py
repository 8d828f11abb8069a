"""MPII end to end in the layout data/README.md documents: head boxes from gt_valid.mat, PCKh.

The fixture is written in the exact reference layout (SimpleBaseline JSON annotations
without ``head_box`` fields, the official ``gt_valid.mat`` keys, ``images/``), so the same
files a user downloads work the same way.
"""
from __future__ import annotations

import contextlib
import io
import json
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

scipy_io = pytest.importorskip("scipy.io", reason="scipy reads MPII's gt_valid.mat")

from ikd_edu.cli import main as cli  # noqa: E402

K = 16


def make_mpii(root: Path, n_val: int = 4, n_train: int = 3, seed: int = 0) -> Path:
    """``root/data/mpii`` as data/README.md lays it out; returns that folder.

    annotations/train.json, annotations/valid.json (SimpleBaseline entries: image, center,
    scale, joints 1-based, joints_vis; no head_box), annotations/gt_valid.mat (headboxes_src
    (2, 2, N), jnt_missing (16, N), pos_gt_src (16, 2, N) as the official file), images/*.jpg.
    """
    rng = np.random.default_rng(seed)
    mpii = root / "data" / "mpii"
    (mpii / "annotations").mkdir(parents=True)
    (mpii / "images").mkdir()

    def entries(n: int, offset: int) -> tuple[list[dict], np.ndarray]:
        out, heads = [], []
        for i in range(n):
            name = f"{offset + i:09d}.jpg"
            Image.fromarray(rng.integers(0, 255, (240, 320, 3), dtype=np.uint8)).save(mpii / "images" / name)
            cx, cy = rng.uniform(120, 200), rng.uniform(100, 140)
            joints = np.stack([rng.uniform(cx - 40, cx + 40, K), rng.uniform(cy - 60, cy + 60, K)], 1).round(2)
            vis = np.ones(K, dtype=int)
            vis[rng.integers(0, K)] = 0
            out.append({"image": name, "center": [round(cx, 2), round(cy, 2)], "scale": 0.7,
                        "joints": joints.tolist(), "joints_vis": vis.tolist()})
            hx, hy = joints[9]  # head top: a head box around it, like MPII's
            heads.append([hx - 12, hy - 2, hx + 12, hy + 30])
        return out, np.asarray(heads)

    train, _ = entries(n_train, 1)
    val, heads = entries(n_val, 100)
    (mpii / "annotations" / "train.json").write_text(json.dumps(train))
    (mpii / "annotations" / "valid.json").write_text(json.dumps(val))
    hb = np.stack([heads[:, :2].T, heads[:, 2:].T])  # (2, 2, N): [upper-left; lower-right] x (x, y) x N
    pos = np.stack([np.asarray(e["joints"]) for e in val], 2)  # (16, 2, N)
    missing = 1 - np.stack([np.asarray(e["joints_vis"]) for e in val], 1)  # (16, N)
    scipy_io.savemat(str(mpii / "annotations" / "gt_valid.mat"),
                     {"headboxes_src": hb, "jnt_missing": missing, "pos_gt_src": pos})
    return mpii


@pytest.fixture
def mpii_root(tmp_path) -> Path:
    return make_mpii(tmp_path)


def _run(argv: list[str]) -> tuple[int, str, str]:
    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        rc = cli(argv)
    return rc, out.getvalue(), err.getvalue()


def test_preset_folders_match_data_readme(mpii_root):
    from ikd_edu.train.config import load_config

    cfg = load_config("mpii-r50-256x256", [f"data.root={mpii_root}"], role="teacher")
    readme = (Path(__file__).resolve().parents[1] / "data" / "README.md").read_text()
    block = readme.split("data/mpii/\n", 1)[1].split("```", 1)[0]  # the documented MPII tree
    listed = [line.split()[0] for line in block.strip().splitlines()]
    for rel in (cfg.data.train_ann, cfg.data.val_ann, "annotations/gt_valid.mat"):
        assert rel in listed, (rel, listed)
        assert (mpii_root / rel).is_file(), rel
    assert f"{cfg.data.val_images}/" in " ".join(listed) and cfg.data.root == str(mpii_root)


def test_eval_dataset_reads_head_boxes_from_gt_valid_mat(mpii_root):
    from ikd_edu.data.mpii import TopDownMpiiDataset

    ann = mpii_root / "annotations" / "valid.json"
    val = TopDownMpiiDataset(ann, mpii_root / "images", input_size=(128, 128), heatmap_size=(32, 32))
    mat = scipy_io.loadmat(str(mpii_root / "annotations" / "gt_valid.mat"))["headboxes_src"]
    np.testing.assert_allclose(val.head_boxes[:, :2], mat[0].T)
    np.testing.assert_allclose(val.head_boxes[:, 2:], mat[1].T)
    # a training set needs none
    train = TopDownMpiiDataset(mpii_root / "annotations" / "train.json", mpii_root / "images", train=True)
    assert np.isnan(train.head_boxes).all()


def test_training_evaluation_of_ground_truth_gives_pckh_100(mpii_root):
    """The preset's val set -> GT heatmaps -> the evaluation's decode + PCKh: 100 %.

    Ground truth takes the place of the network: each item's target heatmaps go through the
    same decode and inverse affine as ``inference.predict`` and into ``engine.score_predictions``.
    """
    from ikd_edu.codec import decode_heatmaps
    from ikd_edu.geometry import heatmap_to_image
    from ikd_edu.train.config import load_config
    from ikd_edu.train.engine import build_dataset, score_predictions

    cfg = load_config("mpii-r50-256x256", [f"data.root={mpii_root}"], role="teacher")
    val = build_dataset(cfg, "val")
    items = [val[i] for i in range(len(val))]
    hm = torch.stack([it["heatmaps"] for it in items])  # (N, 16, 64, 64)
    coords, _ = decode_heatmaps(hm, method=cfg.run.decode)
    kp = heatmap_to_image(coords, torch.stack([it["center"] for it in items]), torch.stack([it["scale"] for it in items]),
                          tuple(cfg.data.heatmap_size))
    pred = {"index": np.arange(len(val)), "keypoints": kp.numpy()}
    metrics = score_predictions(pred, val, cfg)
    assert metrics["PCKh"] == pytest.approx(100.0)
    # and it can fail: joints moved by one head size are wrong
    sizes = 0.6 * np.linalg.norm(val.head_boxes[:, 2:] - val.head_boxes[:, :2], axis=1)
    moved = {"index": pred["index"], "keypoints": pred["keypoints"] + sizes[:, None, None]}
    assert score_predictions(moved, val, cfg)["PCKh"] == pytest.approx(0.0)


def test_ikd_edu_eval_of_ground_truth_gives_pckh_100(mpii_root, tmp_path):
    ann = mpii_root / "annotations" / "valid.json"
    rc, out, err = _run(["eval", "--ann", str(ann), "--results", str(ann), "--out", str(tmp_path / "m.json")])
    assert rc == 0, err
    assert "PCKh@0.5  100.00" in out
    assert json.loads((tmp_path / "m.json").read_text())["PCKh"] == pytest.approx(100.0)
    # a wrong result scores below 100
    entries = json.loads(ann.read_text())
    for e in entries[:2]:
        e["joints"] = (np.asarray(e["joints"]) + 50.0).tolist()
    (tmp_path / "worse.json").write_text(json.dumps(entries))
    rc, out, err = _run(["eval", "--ann", str(ann), "--results", str(tmp_path / "worse.json")])
    assert rc == 0, err
    score = float(out.split()[1])  # "PCKh@0.5  <value>"
    assert 40.0 < score < 60.0, out  # 2 of 4 persons moved out of reach


def test_missing_gt_valid_mat_stops_training_before_it_starts(mpii_root, tmp_path):
    (mpii_root / "annotations" / "gt_valid.mat").unlink()
    out_dir = tmp_path / "run"
    rc, out, err = _run(["train", "teacher", "--preset", "mpii-r50-256x256", "--set", f"data.root={mpii_root}",
                         "--set", "model.teacher=quick-teacher", "--set", "model.pretrained=", "--set", "optim.steps=2",
                         "--set", "data.num_workers=0", "--out", str(out_dir)])
    assert rc == 2
    lines = err.strip().splitlines()
    assert len(lines) == 1, err  # one line
    assert "gt_valid.mat" in lines[0] and str(mpii_root / "annotations") in lines[0]
    assert "human-pose-estimation.pytorch" in lines[0]  # where to get it
    assert not (out_dir / "last.pt").exists() and "step" not in out
    # ikd-edu eval says the same
    ann = mpii_root / "annotations" / "valid.json"
    rc, _, err = _run(["eval", "--ann", str(ann), "--results", str(ann)])
    assert rc == 2 and "gt_valid.mat" in err
