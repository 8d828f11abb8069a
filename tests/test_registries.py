"""Extension points: a distillation term and a dataset added through their registries alone.

Nothing in the library is edited: each test registers its entry (restored afterwards),
trains two steps through the engine and checks that the entry was used.
"""
from __future__ import annotations

import csv
import math

import pytest
import torch
from torch import nn

from ikd_edu.distill import registry
from ikd_edu.train import engine
from ikd_edu.train.config import load_config
from tiny_runs import make_teacher_checkpoint, tiny


class ToyTerm(nn.Module):
    """``mean((s S - T)^2)`` with a learnable scale ``s``: a term with its own parameter."""

    def __init__(self) -> None:
        super().__init__()
        self.scale = nn.Parameter(torch.tensor(0.5))

    def forward(self, student: torch.Tensor, teacher: torch.Tensor) -> torch.Tensor:
        return ((self.scale * student - teacher.float()) ** 2).mean()


TOY = registry.Term(
    name="toy", build=lambda options: ToyTerm(),
    loss=lambda module, x, weight: {"toy": weight * module(x.student_heatmaps, x.teacher("heatmaps"))},
    weight_key=None, default_weight=3.0, teacher_taps=lambda options: ("heatmaps",), display="toy term")


def test_a_term_added_through_the_registry_alone_is_trained(synthetic_root, tmp_path):
    out = tmp_path / "toy"
    ckpt = make_teacher_checkpoint(tmp_path / "teacher.pt")
    overrides = tiny(synthetic_root, out, steps=2, **{"distill.terms": "toy,logit", "model.teacher_checkpoint": ckpt})
    with registry.registered_term(TOY):
        cfg = load_config("quick", overrides, role="student")
        assert cfg.distill.terms == ["logit", "toy"]  # the registry's order
        criterion = engine.build_criterion(cfg, nn.Identity(), None)
        assert criterion.terms == ("logit", "toy") and criterion.toy_weight == 3.0
        torch.manual_seed(1)
        before = {k: v.clone() for k, v in engine.build_trained_model(cfg).state_dict().items()}
        summary = engine.train(cfg)
    assert "toy" not in registry.part_names()  # restored
    with open(out / "metrics.csv") as fh:
        rows = list(csv.DictReader(fh))
    assert [int(r["step"]) for r in rows] == [1, 2]
    assert set(rows[0]) == {"step", "epoch", "lr", "gt", "logit", "toy", "total"}
    for r in rows:
        assert float(r["toy"]) > 0 and math.isfinite(float(r["toy"]))
        parts = float(r["gt"]) + float(r["logit"]) + float(r["toy"])
        assert float(r["total"]) == pytest.approx(parts, rel=1e-4)
    saved = torch.load(out / "last.pt", weights_only=True)
    assert saved["distill"]["toy.scale"].item() != 0.5  # the term's own parameter was trained
    changed = [k for k, v in saved["model"].items() if v.is_floating_point() and not torch.equal(v, before[k])]
    assert changed, "the student's weights did not move"
    assert summary["steps"] == 2
    # without the registry entry the same config is refused, naming the known terms
    from ikd_edu.errors import UserError

    with pytest.raises(UserError, match="unknown term 'toy'"):
        load_config("quick", overrides, role="student")


def test_a_registered_term_cannot_shadow_another():
    with pytest.raises(ValueError, match="already registered"):
        registry.register_term(registry.Term("structure", lambda o: None, lambda m, x, w: {}, None, 1.0))
    assert registry.user_terms() == ("logit", "feature", "structure")


def test_a_dataset_added_through_the_registry_alone_is_trained_and_scored(synthetic_root, tmp_path):
    """A COCO-layout set with its own skeleton and metric (PCK at half the box size), registered in the test only."""
    import dataclasses

    import numpy as np

    from ikd_edu.data import registry as data_registry
    from ikd_edu.data.coco import TopDownCocoDataset
    from ikd_edu.errors import UserError
    from ikd_edu.skeleton import COCO

    skeleton = dataclasses.replace(COCO, name="toy", upper_body=(0, 1, 2, 3, 4))
    built, scored = [], []

    def build(cfg, train, ann, images, common):
        built.append(train)
        return TopDownCocoDataset(ann, images, skeleton=skeleton, **common)

    def score(pred, dataset, results_path=None):
        gt = dataset.rec_joints[pred["index"]]  # (N, K, 3)
        radius = 0.5 * np.sqrt(dataset.rec_gt_area[pred["index"]])[:, None]  # (N, 1)
        hit = np.linalg.norm(pred["keypoints"] - gt[..., :2], axis=-1) <= radius
        value = float(hit[gt[..., 2] > 0].mean())
        scored.append((len(pred["index"]), value))
        return {"PCKbox": value}

    spec = data_registry.DatasetSpec("toy", build, skeleton, score, "PCKbox")
    out = tmp_path / "toy-data"
    overrides = tiny(synthetic_root, out, steps=2, **{"data.dataset": "toy"})
    with data_registry.registered_dataset(spec):
        cfg = load_config("quick", overrides, role="teacher")
        assert cfg.num_joints == 17 and engine.primary_metric(cfg) == "PCKbox"
        summary = engine.train(cfg)
        val = engine.build_dataset(cfg, "val")
    assert "toy" not in data_registry.dataset_names()  # restored
    assert built[:2] == [True, False] and val.skeleton is skeleton
    assert len(scored) == 1 and scored[0][0] == len(val)  # one evaluation, on every validation record
    assert summary["best"] == {"metric": "PCKbox", "value": scored[0][1], "step": 2}
    assert summary["final"] == {"PCKbox": scored[0][1]}
    with open(out / "eval.csv") as fh:
        rows = list(csv.DictReader(fh))
    assert list(rows[0]) == ["step", "epoch", "PCKbox"]
    assert torch.load(out / "best.pt", weights_only=True)["best"]["metric"] == "PCKbox"
    # the metric can fail: predictions moved far away score 0
    pred = {"index": np.arange(len(val)), "keypoints": val.rec_joints[:, :, :2] + 1e4}
    assert score(pred, val)["PCKbox"] == 0.0
    pred["keypoints"] = val.rec_joints[:, :, :2]
    assert score(pred, val)["PCKbox"] == 1.0
    with pytest.raises(UserError, match="data.dataset: expected one of coco, mpii, synthetic"):
        load_config("quick", overrides, role="teacher")
