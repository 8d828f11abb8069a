"""The training loop on a tiny model: outputs, distillation, non-finite stop, magnitude warning, atomic checkpoints."""
from __future__ import annotations

import csv
import hashlib

import pytest
import torch

from ikd_edu.train import engine
from ikd_edu.train.config import load_config
from tiny_runs import make_teacher_checkpoint, tiny


def read_csv(path):
    with open(path) as fh:
        return list(csv.DictReader(fh))


def test_teacher_run_writes_everything(synthetic_root, tmp_path):
    out = tmp_path / "teacher"
    summary = engine.train(load_config("quick", tiny(synthetic_root, out), role="teacher"))
    for name in ("config.yaml", "last.pt", "best.pt", "metrics.csv", "eval.csv", "val_results.json", "summary.json"):
        assert (out / name).is_file(), name
    rows = read_csv(out / "metrics.csv")
    assert [int(r["step"]) for r in rows] == [1, 2, 3, 4]
    assert set(rows[0]) == {"step", "epoch", "lr", "gt", "total"}
    assert summary["steps"] == 4 and summary["best"]["metric"] == "AP" and 0.0 <= summary["best"]["value"] <= 1.0
    ckpt = torch.load(out / "last.pt", weights_only=True)
    assert {"model", "distill", "optimizer", "scheduler", "rng", "position", "config"} <= set(ckpt)
    assert ckpt["position"] == {"epoch": 0, "batch": 4, "step": 4}
    # best.pt is a pose checkpoint: it loads into the architecture, and evaluates
    from ikd_edu.models import build_model
    from ikd_edu.models.checkpoints import load_pose_checkpoint

    model = build_model("quick-teacher", widths=[8, 8, 16, 16], blocks=[1, 1, 1, 1], deconv_channels=16)
    assert load_pose_checkpoint(model, out / "best.pt").ok
    metrics = engine.evaluate_checkpoint(load_config("quick", tiny(synthetic_root, out), role="teacher"), out / "best.pt")
    assert metrics["AP"] == pytest.approx(summary["final"]["AP"], abs=1e-9)


def test_distilled_student_logs_every_term_and_warns_on_imbalance(synthetic_root, tmp_path, capsys):
    ckpt = make_teacher_checkpoint(tmp_path / "teacher.pt")
    out = tmp_path / "student"
    cfg = load_config("quick", tiny(synthetic_root, out, steps=2, **{
        "distill.terms": "logit,feature,structure", "model.teacher_checkpoint": ckpt,
        "distill.feature_weight": 100.0, "run.magnitude_batches": 2}))
    engine.train(cfg)
    rows = read_csv(out / "metrics.csv")
    assert set(rows[0]) == {"step", "epoch", "lr", "gt", "logit", "feature", "affinity", "relation", "total"}
    text = capsys.readouterr().out
    assert "loss terms, batch 1:" in text
    assert "warning: weighted term 'feature'" in text and "distill.feature_weight" in text
    # the teacher stayed frozen: its adapter-free weights never change and it has no grads
    saved = torch.load(out / "last.pt", weights_only=True)
    assert any(k.startswith("feature.") for k in saved["distill"])  # the adapter is checkpointed


def test_magnitude_warning_rule():
    warn = engine.magnitude_warnings({"gt": 1e-3, "logit": 5e-4, "feature": 0.5, "total": 0.5015}, ratio=100)
    assert len(warn) == 1 and "'feature'" in warn[0] and "500x larger" in warn[0] and "by 0.002" in warn[0]
    assert engine.magnitude_warnings({"gt": 1e-3, "feature": 2e-2}, ratio=100) == []
    tiny_term = engine.magnitude_warnings({"gt": 1e-3, "relation": 1e-7}, ratio=100)
    assert "smaller" in tiny_term[0] and "distill.relation_weight" in tiny_term[0]


def _sha(path):
    return hashlib.sha256(path.read_bytes()).hexdigest()


def test_non_finite_loss_stops_naming_step_and_term(synthetic_root, tmp_path):
    ckpt = make_teacher_checkpoint(tmp_path / "teacher.pt")
    out = tmp_path / "student"
    common = {"distill.terms": "feature", "model.teacher_checkpoint": ckpt, "run.log_every": 3}
    engine.train(load_config("quick", tiny(synthetic_root, out, steps=4, **common)))
    good = _sha(out / "last.pt")
    # continue the same run with a feature weight that overflows: step 5 is the first bad one
    cfg = load_config("quick", tiny(synthetic_root, out, steps=8, **common, **{"distill.feature_weight": "inf"}))
    with pytest.raises(engine.NonFiniteLossError) as info:
        engine.train(cfg)
    text = str(info.value)
    assert "non-finite loss at step 5: term 'feature' = inf" in text
    assert "lower distill.feature_weight or the lr" in text and str(out / "last.pt") in text
    assert _sha(out / "last.pt") == good  # the last good checkpoint is untouched
    assert torch.load(out / "last.pt", weights_only=True)["position"]["step"] == 4


def test_checkpoint_write_is_atomic(tmp_path, monkeypatch):
    path = tmp_path / "last.pt"
    torch.save({"old": torch.ones(2)}, path)
    before = _sha(path)

    def broken_save(obj, fh, *args, **kwargs):
        fh.write(b"partial bytes")
        raise OSError("disk full")

    monkeypatch.setattr(torch, "save", broken_save)
    cfg = load_config("quick", role="teacher")
    model = torch.nn.Linear(2, 2)
    opt = torch.optim.Adam(model.parameters())
    with pytest.raises(OSError, match="disk full"):
        engine.save_checkpoint(path, model=model, criterion=torch.nn.Module(), optimizer=opt,
                               scheduler=torch.optim.lr_scheduler.LambdaLR(opt, lambda s: 1.0), scaler=None,
                               position=engine.Position(), cfg=cfg, best={})
    assert _sha(path) == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["last.pt"]  # no temp file left behind


def test_schedules():
    cfg = load_config("coco-r50-256x192", role="teacher")
    opt = torch.optim.Adam(torch.nn.Linear(1, 1).parameters(), lr=1e-3)
    sched = engine.build_scheduler(cfg, opt, total_steps=140 * 10, steps_per_epoch=10)
    lrs = []
    for _ in range(140 * 10):
        lrs.append(opt.param_groups[0]["lr"])
        opt.step()
        sched.step()
    assert lrs[0] == pytest.approx(1e-3) and lrs[899] == pytest.approx(1e-3)
    assert lrs[900] == pytest.approx(1e-4) and lrs[1200] == pytest.approx(1e-5)


def test_ablation_verdict_rule():
    from ikd_edu.apps.ablation import verdict

    labels = [0.30, 0.31, 0.29]  # std 0.01
    assert verdict([0.40, 0.41, 0.39], labels) == "helps"
    assert verdict([0.20, 0.21, 0.19], labels) == "hurts"
    assert verdict([0.301, 0.302, 0.300], [0.300, 0.301, 0.299]) == "no measurable effect"  # precise, no effect
    assert verdict([0.31, 0.25, 0.37], labels) == "inconclusive"  # too noisy to tell
    assert verdict([0.5], [0.3]) == "inconclusive"  # one seed: no spread


def test_ablation_end_to_end(synthetic_root, tmp_path):
    import json

    from ikd_edu.apps.ablation import run_ablation

    ckpt = make_teacher_checkpoint(tmp_path / "teacher.pt")
    overrides = tiny(synthetic_root, tmp_path / "unused", steps=2, **{"model.teacher_checkpoint": ckpt})
    result = run_ablation("quick", seeds=2, variants=["labels", "logit"], overrides=overrides,
                          out_dir=str(tmp_path / "abl"))
    rows = {r["variant"]: r for r in result["rows"]}
    assert rows["labels"]["seeds"] == rows["logit"]["seeds"] == 2
    assert rows["logit"]["verdict"] in ("helps", "hurts", "no measurable effect", "inconclusive")
    for kind in ("json", "csv", "md", "png"):
        assert (tmp_path / "abl" / f"ablation.{kind}").is_file()
    assert json.loads((tmp_path / "abl" / "ablation.json").read_text())["rows"][0]["variant"] == "labels"
    assert "| logit | logit | 2 |" in (tmp_path / "abl" / "ablation.md").read_text()
    # seeds differ, variants share the labels: per-run configs say so
    assert (tmp_path / "abl" / "logit" / "seed1" / "config.yaml").read_text().count("seed: 1") == 1


FLIP_ONLY = {"data.augment.scale_factor": 0, "data.augment.rotation_prob": 0, "data.augment.half_body_prob": 0}


def test_crop_cache_batches_are_the_loaders_batches(synthetic_root):
    """CropCache.batch(keys) == what the DataLoader collates for the same (index, seed) keys, flips included."""
    from ikd_edu.train import distributed as D

    cfg = load_config("quick", tiny(synthetic_root, "unused", **FLIP_ONLY, **{"data.cache_crops": "true"}),
                      role="teacher", check_files=False)
    train_set = engine.build_dataset(cfg, "train")
    indices = engine.train_indices(cfg, train_set)[::2]  # a subset: other records are not cached
    from ikd_edu.train.caches import CropCache

    cache = CropCache.build(train_set, indices, cfg)
    sampler = D.ResumableBatchSampler(indices, 8, seed=5, epoch=1, rank=0, world_size=1)
    loader = engine.make_loader(train_set, sampler, cfg, torch.device("cpu"), seed=0)
    flips = []
    for keys, want in zip(sampler, loader):
        got = cache.batch(keys)
        for k in ("image", "heatmaps", "target_weight", "index", "flipped"):
            assert torch.equal(got[k], want[k]), k
        flips += got["flipped"].tolist()
    assert any(flips) and not all(flips), "both flips must occur for the test to mean anything"
    with pytest.raises(RuntimeError, match="not cached"):
        cache.batch([(int(indices[0]) + 1, 0)])


def test_crop_cache_run_equals_uncached_run_and_needs_flip_only(synthetic_root, tmp_path):
    from ikd_edu.errors import UserError

    with pytest.raises(UserError, match="data.cache_crops"):
        load_config("quick", tiny(synthetic_root, tmp_path / "x", **{"data.cache_crops": "true"}), role="teacher")
    finals = []
    for cached in ("false", "true"):
        out = tmp_path / f"cached-{cached}"
        engine.train(load_config("quick", tiny(synthetic_root, out, steps=5, batch=4, **FLIP_ONLY,
                                               **{"data.cache_crops": cached}), role="teacher"))
        finals.append(torch.load(out / "last.pt", weights_only=True)["model"])
    for name, value in finals[0].items():
        assert torch.equal(value, finals[1][name]), name


def test_cache_store_reuses_crops_and_teacher_outputs_across_runs(synthetic_root, tmp_path, capsys):
    """Runs sharing a CacheStore train exactly as runs that build their own caches; only equal keys are reused."""
    from ikd_edu.train.caches import CacheStore

    teacher = make_teacher_checkpoint(tmp_path / "teacher.pt")
    common = {**FLIP_ONLY, "data.cache_crops": "true", "distill.teacher_cache": "true",
              "model.teacher_checkpoint": str(teacher)}

    def run(name, terms, caches, **extra):
        out = tmp_path / name
        capsys.readouterr()
        summary = engine.train(load_config("quick", tiny(synthetic_root, out, steps=3, batch=4, **common, **extra,
                                                          **{"distill.terms": terms}), role="student"),
                               caches=caches)
        return summary, torch.load(out / "last.pt", weights_only=True)["model"], capsys.readouterr().out

    store = CacheStore()
    first, _, said = run("ikd-shared", "logit,feature,structure", store)
    assert first["teacher_cache_s"] > 0 and "reused" not in said
    shared, shared_weights, said = run("logit-shared", "logit", store)  # heatmaps: a subset of the IKD taps
    assert said.count("reused from an earlier run") == 2  # crops and teacher outputs
    own, own_weights, _ = run("logit-own", "logit", None)
    assert shared["teacher_cache_s"] < own["teacher_cache_s"]
    for key, value in own_weights.items():
        assert torch.equal(value, shared_weights[key]), key
    _, _, said = run("logit-sigma", "logit", store, **{"data.sigma": 3.0})  # other targets: other crops
    assert "reused" not in said
