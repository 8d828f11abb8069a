"""torchrun with 2 CPU processes (gloo) follows the single-process run with the same global batch.

Why the runs can agree: the sampler deals every global batch of 8 to the ranks (4 each),
per-sample augmentation seeds do not depend on the rank, and DDP averages gradients, which
equals the gradient of the mean loss over all 8 crops. BatchNorm is the one thing that
differs (statistics over 4 vs 8 crops, and SyncBatchNorm does not run on CPU), so the
comparison trains with ``model.freeze_bn=true`` (BN uses its running statistics).
What remains is float summation order: tolerance 1e-4 relative on every logged loss and
1e-4 absolute on the final weights (observed differences are around 1e-7).
"""
from __future__ import annotations

import csv
import os
import subprocess
import sys

import numpy as np
import pytest
import torch

from ikd_edu.train.distributed import ResumableBatchSampler, epoch_order

TINY_TEACHER = "{widths: [8, 8, 16, 16], blocks: [1, 1, 1, 1], deconv_channels: 16}"


def _sets(root, out, batch):
    sets = {
        "data.dataset": "coco", "data.root": str(root), "data.input_size": "64x64", "data.heatmap_size": "16x16",
        "data.num_workers": 0, "model.teacher_options": TINY_TEACHER, "model.freeze_bn": "true",
        "optim.steps": 5, "optim.batch_size": batch, "optim.lr": 1e-3, "optim.schedule": "constant",
        "run.log_every": 1, "run.eval_every": 1000, "run.ckpt_every": 5, "run.tensorboard": "false",
        "run.progress": "off", "run.deterministic": "true", "run.seed": 1, "run.out_dir": str(out),
    }
    args = ["train", "teacher", "--preset", "quick"]
    for k, v in sets.items():
        args += ["--set", f"{k}={v}"]
    return args


def _rows(path):
    with open(path) as fh:
        return list(csv.DictReader(fh))


def test_sampler_deals_global_batches_to_ranks():
    indices = np.arange(100, 150)
    single = list(ResumableBatchSampler(indices, 8, seed=5, epoch=2))
    rank0 = list(ResumableBatchSampler(indices, 4, seed=5, epoch=2, rank=0, world_size=2))
    rank1 = list(ResumableBatchSampler(indices, 4, seed=5, epoch=2, rank=1, world_size=2))
    assert len(single) == len(rank0) == len(rank1) == 50 // 8
    for s, a, b in zip(single, rank0, rank1):
        assert s == a + b  # same samples, same augmentation seeds
    # resuming at batch 3 replays exactly the remaining batches
    assert list(ResumableBatchSampler(indices, 8, seed=5, epoch=2, start_batch=3)) == single[3:]
    # epochs differ, seeds are reproducible
    o2, _ = epoch_order(5, 2, indices)
    o3, _ = epoch_order(5, 3, indices)
    assert not torch.equal(o2, o3) and torch.equal(o2, epoch_order(5, 2, indices)[0])
    assert sorted(o2.tolist()) == list(indices)


@pytest.mark.slow
def test_two_process_ddp_matches_single_process(synthetic_root, tmp_path):
    env = dict(os.environ, OMP_NUM_THREADS="1")
    single, ddp = tmp_path / "single", tmp_path / "ddp"
    r = subprocess.run([sys.executable, "-m", "ikd_edu.cli", *_sets(synthetic_root, single, 8)],
                       env=env, capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stderr[-3000:]
    r = subprocess.run([sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2",
                        "-m", "ikd_edu.cli", *_sets(synthetic_root, ddp, 4)],
                       env=env, capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, (r.stdout[-2000:], r.stderr[-3000:])
    assert "batch 4 x 2 process(es)" in r.stdout
    a, b = _rows(single / "metrics.csv"), _rows(ddp / "metrics.csv")
    assert [x["step"] for x in a] == [x["step"] for x in b] == ["1", "2", "3", "4", "5"]
    for x, y in zip(a, b):
        assert abs(float(x["total"]) - float(y["total"])) <= 1e-4 * abs(float(x["total"])), (x, y)
    # the curve is not flat, so agreement means something
    assert float(a[0]["total"]) != float(a[-1]["total"])
    wa = torch.load(single / "last.pt", weights_only=True)["model"]
    wb = torch.load(ddp / "last.pt", weights_only=True)["model"]
    for key in wa:
        assert torch.allclose(wa[key].float(), wb[key].float(), rtol=0, atol=1e-4), key
    # evaluation gathered both ranks' predictions: same metrics as one process
    ea, eb = _rows(single / "eval.csv"), _rows(ddp / "eval.csv")
    assert abs(float(ea[-1]["AP"]) - float(eb[-1]["AP"])) <= 1e-3
