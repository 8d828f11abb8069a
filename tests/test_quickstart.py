"""The quickstart end to end (``--fast``: tiny data, a few steps), its reuse of finished runs,
and the teacher-output cache that makes its distilled students affordable on a CPU."""
from __future__ import annotations

import json
import re

import numpy as np
import pytest
import torch

from ikd_edu.apps import quickstart as Q

REQUIRED_NAMES = {"teacher", "student-labels", "student-logit", "student-feature", "student-structure",
                  "student-ikd", "student-labels-equal-time"}
REQUIRED_FIELDS = {"name", "AP", "AR", "params", "gmacs", "latency_ms", "train_s", "steps"}


def _mtimes(root):
    return {p: p.stat().st_mtime_ns for p in root.rglob("*.pt")}


def test_quickstart_fast_end_to_end_and_reuse(tmp_path, capsys):
    out = tmp_path / "qs"
    rows = Q.run_quickstart(out, seed=0, fast=True)
    first = capsys.readouterr().out
    assert "[1/4] data" in first and "[2/4] teacher" in first and "[4/4] evaluation" in first

    saved = json.loads((out / "results.json").read_text())
    assert saved == json.loads(json.dumps(rows))
    assert {r["name"] for r in saved} == REQUIRED_NAMES
    for r in saved:
        assert REQUIRED_FIELDS <= set(r), r["name"]
        assert 0.0 <= r["AP"] <= 1.0 and 0.0 <= r["AR"] <= 1.0
        assert r["params"] > 0 and r["gmacs"] > 0 and r["latency_ms"] > 0 and r["train_s"] > 0
    by = {r["name"]: r for r in saved}
    fast = Q.settings(fast=True)
    assert by["teacher"]["steps"] == fast["teacher_steps"]
    assert by["teacher"]["params"] > by["student-labels"]["params"]
    for name in Q.STUDENTS:  # same budget for every variant
        assert by[name]["steps"] == fast["student_steps"]
        assert by[name]["labelled_images"] == fast["label_subset"]
    assert by["student-ikd"]["terms"] == ["logit", "feature", "structure"]
    assert by["student-labels"]["terms"] == []
    # distilled students ran with the cache; its time is part of their training time
    assert by["student-ikd"]["teacher_cache_s"] > 0 and by["student-labels"]["teacher_cache_s"] == 0
    eq = json.loads((out / "seed-0" / "equal_time.json").read_text())
    assert by["student-labels-equal-time"]["steps"] == eq["steps"] >= fast["student_steps"]
    assert json.loads((out / "summary.json").read_text())["equal_time_per_seed"] == {"0": eq}
    assert (out / "ablation.png").stat().st_size > 0 and (out / "teacher_curves.png").stat().st_size > 0
    assert (out / "results-seed0.json").is_file()

    # second invocation: nothing is retrained (checkpoints untouched), same table
    before = _mtimes(out)
    assert len(before) >= 2 * 7
    rows2 = Q.run_quickstart(out, seed=0, fast=True)
    second = capsys.readouterr().out
    assert _mtimes(out) == before
    assert second.count("reusing") >= 7
    assert not re.search(r": (training|resuming) \d+ steps", second), second
    assert re.search(r": training \d+ steps", first)
    assert [r["AP"] for r in rows2] == [r["AP"] for r in rows]


def test_equal_time_steps_from_timings_and_stored(tmp_path):
    labels = {"train_s": 10.0, "steps": 100}
    ikd = {"train_s": 25.0, "steps": 100, "teacher_cache_s": 3.0}
    steps, info = Q.equal_time_steps(tmp_path, labels, ikd, 100)
    assert steps == 250 and info["labels_step_s"] == pytest.approx(0.1)
    # stored: a rerun with other timings keeps the first answer (so an interrupted run resumes)
    assert Q.equal_time_steps(tmp_path, labels, {**ikd, "train_s": 99.0}, 100)[0] == 250
    assert Q.equal_time_steps(tmp_path / "b", labels, {**ikd, "train_s": 1.0}, 100)[0] == 100  # never fewer
    assert Q.equal_time_steps(tmp_path / "c", labels, {**ikd, "train_s": 1e6}, 100, max_factor=3)[0] == 300


def test_summarize_seeds_mean_and_spread():
    rows = lambda a, b: [{"name": "student-labels", "AP": a}, {"name": "student-ikd", "AP": b}]  # noqa: E731
    summary = {r["name"]: r for r in Q.summarize_seeds({0: rows(0.30, 0.46), 1: rows(0.32, 0.48)})}
    assert summary["student-ikd"]["AP_mean"] == pytest.approx(0.47)
    assert summary["student-labels"]["AP_std"] == pytest.approx(np.std([0.30, 0.32], ddof=1))
    assert summary["student-ikd"]["n"] == 2


@pytest.mark.parametrize("structure_tap", ["layer4", "deconv1"])
def test_teacher_cache_equals_teacher_on_the_crops_the_student_sees(tmp_path, structure_tap):
    """Every cached tap == the teacher's forward pass on the training crop, flipped and unflipped (float16)."""
    import dataclasses

    from ikd_edu.data.synthetic import ensure_synthetic
    from ikd_edu.models import build_model
    from ikd_edu.train.config import load_config
    from ikd_edu.train.caches import CropCache, TeacherCache
    from ikd_edu.train.engine import build_dataset

    root = ensure_synthetic(tmp_path / "d", 6, seed=3, val_images=1, progress=False)
    cfg = load_config("quick", [f"data.root={root}", "data.synthetic_images=6", "data.synthetic_val_images=1",
                                "data.augment.scale_factor=0", "data.augment.rotation_prob=0",
                                "data.augment.half_body_prob=0", "distill.terms=logit,feature,structure",
                                f"distill.structure_tap={structure_tap}", "distill.teacher_cache=true",
                                "data.num_workers=0", "run.eval_batch_size=4"], role="student", check_files=False)
    train_set = build_dataset(cfg, "train")
    torch.manual_seed(0)
    teacher = build_model(cfg.model.teacher).eval()
    for m in teacher.modules():  # a non-trivial BN so that the teacher is far from mirror-symmetric
        if isinstance(m, torch.nn.BatchNorm2d):
            m.running_mean.uniform_(-0.2, 0.2)
            m.running_var.uniform_(0.5, 1.5)
    names = sorted({"heatmaps", cfg.distill.feature_tap, structure_tap})
    n = len(train_set)
    idx = torch.arange(n)
    cache = TeacherCache.build(teacher, train_set, idx.tolist(), names, cfg, torch.device("cpu"))
    assert cache.taps["heatmaps"].shape[:2] == (2, n)
    from_crops = TeacherCache.build(teacher, train_set, idx.tolist(), names, cfg, torch.device("cpu"),
                                    crops=CropCache.build(train_set, idx.tolist(), cfg))
    for name in names:  # the crop cache's stored crops are the very batches the teacher cache would cut
        assert torch.equal(from_crops.taps[name], cache.taps[name]), name
    for flip in (False, True):
        crops = dataclasses.replace(train_set.augment, flip_prob=1.0 if flip else 0.0)
        fixed = __import__("copy").copy(train_set)
        fixed.augment = crops
        images = torch.stack([fixed[i]["image"] for i in range(n)])  # the crops the student is trained on
        with torch.no_grad():
            want = teacher.forward_taps(images, names)
        got = cache.lookup(idx, torch.full((n,), flip))
        for name in names:
            # float16 storage: equal to the on-the-fly output to float16 rounding
            torch.testing.assert_close(got[name], want[name], rtol=2e-3, atol=1e-5, msg=f"{name}, flip {flip}")
    mixed = torch.tensor([i % 2 == 1 for i in range(n)])
    both = cache.lookup(idx, mixed)
    for name in names:
        assert torch.equal(both[name][mixed], cache.taps[name][1, mixed].float())
        assert torch.equal(both[name][~mixed], cache.taps[name][0, ~mixed].float())
    # the mirror of the unflipped output is NOT the teacher on the flipped crop: the cache must not use it
    from ikd_edu.codec import flip_back

    real = cache.taps["heatmaps"][1].float()
    mirrored = flip_back(cache.taps["heatmaps"][0].float(), train_set.skeleton.flip_index)
    assert (mirrored - real).abs().max() > 0.05 * real.abs().max()


def test_teacher_cache_needs_flip_only_augmentation(tmp_path):
    from ikd_edu.errors import UserError
    from ikd_edu.train.config import load_config

    with pytest.raises(UserError, match="distill.teacher_cache"):
        load_config("quick", ["distill.teacher_cache=true", "distill.terms=logit"], role="student", check_files=False)
    cfg = load_config("quick", ["distill.teacher_cache=true", "distill.terms=logit", "data.augment.scale_factor=0",
                                "data.augment.rotation_prob=0"], role="student", check_files=False)
    assert cfg.distill.teacher_cache
    assert not load_config("coco-r50-256x192", role="student", check_files=False).distill.teacher_cache


def test_verdicts_come_from_the_seed_numbers():
    assert Q.verdict(21.0, 0.3, 16.0, 0.8, 3) == "helps"  # +5.0 > 2 x 0.8
    assert Q.verdict(16.0, 0.3, 21.0, 0.8, 3) == "hurts"
    assert Q.verdict(16.5, 0.3, 16.0, 0.8, 3) == "no effect"  # |0.5| <= 0.8
    assert Q.verdict(17.2, 0.3, 16.0, 0.8, 3) == "inconclusive"  # 0.8 < 1.2 <= 1.6
    assert Q.verdict(30.0, 0.0, 10.0, 0.0, 1).startswith("inconclusive")  # one seed: no spread


def test_readme_table_is_generated_from_summary(tmp_path):
    import importlib.util

    spec = importlib.util.spec_from_file_location("tables", Q.Path(__file__).resolve().parent.parent / "scripts" / "make_readme_tables.py")
    tables = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(tables)
    aps = {"teacher": [0.59] * 3, "student-labels": [0.16, 0.17, 0.165], "student-labels-equal-time": [0.17, 0.175, 0.17],
           "student-logit": [0.18, 0.19, 0.185], "student-feature": [0.165, 0.17, 0.16],
           "student-structure": [0.17, 0.16, 0.18], "student-ikd": [0.21, 0.215, 0.22]}
    seeds = {s: [{"name": n, "AP": v[s]} for n, v in aps.items()] for s in range(3)}
    eq = {"ikd_train_s": 90.0, "ikd_steps": 800, "ikd_teacher_cache_s": 8.0, "labels_step_s": 0.08, "steps": 1125}
    summary = {"seeds": [0, 1, 2], "rows": Q.summarize_seeds(seeds), "equal_time": eq,
               "equal_time_per_seed": {"0": eq, "1": {**eq, "labels_step_s": 0.1125, "steps": 800}}}
    (tmp_path / "summary.json").write_text(json.dumps(summary))
    readme = tmp_path / "README.md"
    readme.write_text(f"intro\n{tables.BEGIN}\nold\n{tables.END}\noutro\n")
    args = ["--summary", str(tmp_path / "summary.json"), "--readme", str(readme), "--artifacts", str(tmp_path / "none")]
    assert tables.main(args + ["--check"]) == 1
    assert tables.main(args) == 0
    text = readme.read_text()
    assert text.startswith("intro\n") and text.endswith("outro\n") and "old" not in text
    assert "| **student-ikd** (all three) | 21.0 | 21.5 | 22.0 | 21.5 | 0.5 |" in text
    assert "| student-ikd vs student-labels | +5.0 AP | 0.5 | helps |" in text
    assert "| student-ikd vs student-labels-equal-time |" in text
    assert "seed 0: 90 s (8 s) / 80 ms = 1125 steps; seed 1: 90 s (8 s) / 112 ms = 800 steps." in text
    assert tables.main(args + ["--check"]) == 0


def test_quick_structure_tap_has_at_least_48_positions():
    """The affinity of the quick preset compares >= 48 positions (layer4 at 128x96 has 4 x 3 = 12)."""
    from ikd_edu.distill.structure import pooled_grid_size
    from ikd_edu.models import build_model
    from ikd_edu.train.config import load_config

    cfg = load_config("quick", role="student", check_files=False)
    tap = cfg.distill.structure_tap
    for name in (cfg.model.student, cfg.model.teacher):
        with torch.no_grad():
            f = build_model(name).eval().forward_taps(torch.zeros(1, 3, *cfg.data.input_size), [tap])[tap]
        gh, gw = pooled_grid_size(f.shape[-2:])
        assert gh * gw >= 48, (name, tap, tuple(f.shape))


def test_full_mode_trains_the_paper_models_at_a_tiny_size(tmp_path, capsys):
    """``--full --fast``: the R50 teacher and R18 student, the device pipeline, COCO-like 4:3 images (tiny here)."""
    full = Q.settings(full=True)
    assert (full["teacher_model"], full["student_model"]) == ("simplebaseline-r50", "student")
    assert full["input_size"] == (256, 192) and full["image_size"] == (480, 640) and full["pipeline"] == "device"
    assert "teacher_model" not in Q.settings() and "teacher_model" not in Q.settings(fast=True)
    out = tmp_path / "qs-full"
    rows = Q.run_quickstart(out, seed=0, fast=True, full=True)
    assert "quickstart --full" in capsys.readouterr().out
    by = {r["name"]: r for r in rows}
    t_cfg = json.loads(json.dumps(__import__("yaml").safe_load((out / "teacher" / "config.yaml").read_text())))
    assert t_cfg["model"]["teacher"] == "simplebaseline-r50" and t_cfg["data"]["pipeline"] == "device"
    assert list(t_cfg["data"]["input_size"]) == list(Q.FULL_FAST["input_size"])
    s_cfg = __import__("yaml").safe_load((out / "seed-0" / "student-ikd" / "config.yaml").read_text())
    assert s_cfg["model"]["student"] == "student" and s_cfg["distill"]["terms"] == ["logit", "feature", "structure"]
    assert by["teacher"]["params"] > 20e6 > by["student-ikd"]["params"]  # R50 (34 M) vs R18 + 3x64 deconvs
    assert by["student-ikd"]["steps"] == Q.settings(fast=True, full=True)["student_steps"]
