"""Kill a run mid-epoch (SIGKILL, like a pre-empted job), resume it, and get the uninterrupted result.

Setup: 54 training crops, batch 8 -> 6 steps per epoch; 10 steps = epoch 0 (steps 1-6) and
4 steps of epoch 1. ``last.pt`` is written every 4 steps; the run dies right after step 9,
so the resume starts from step 8 = epoch 1, batch 2 (mid-epoch) and replays step 9.
CPU + deterministic mode: the final weights must match the uninterrupted run bit for bit
(we allow 1e-6 for safety across BLAS builds; in practice they are equal).
"""
from __future__ import annotations

import csv
import os
import signal
import subprocess
import sys

import torch

TINY_TEACHER = "{widths: [8, 8, 16, 16], blocks: [1, 1, 1, 1], deconv_channels: 16}"


def _args(root, out):
    sets = {
        "data.dataset": "coco", "data.root": str(root), "data.input_size": "64x64", "data.heatmap_size": "16x16",
        "data.num_workers": 0, "model.teacher_options": TINY_TEACHER, "optim.steps": 10, "optim.batch_size": 8,
        "optim.schedule": "onecycle", "run.log_every": 1, "run.eval_every": 1000, "run.ckpt_every": 4,
        "run.tensorboard": "false", "run.progress": "off", "run.deterministic": "true", "run.seed": 3,
    }
    argv = [sys.executable, "-m", "ikd_edu.cli", "train", "teacher", "--preset", "quick", "--out", str(out)]
    for k, v in sets.items():
        argv += ["--set", f"{k}={v}"]
    return argv


def _run(root, out, kill_after=None):
    env = dict(os.environ, OMP_NUM_THREADS="1")
    if kill_after:
        env["IKD_EDU_KILL_AFTER_STEP"] = str(kill_after)
    return subprocess.run(_args(root, out), env=env, capture_output=True, text=True, timeout=300)


def _rows(path):
    with open(path) as fh:
        return list(csv.DictReader(fh))


def test_sigkill_mid_epoch_then_resume_matches_uninterrupted(synthetic_root, tmp_path):
    straight, broken = tmp_path / "straight", tmp_path / "broken"
    r = _run(synthetic_root, straight)
    assert r.returncode == 0, r.stderr[-2000:]

    r = _run(synthetic_root, broken, kill_after=9)
    assert r.returncode == -signal.SIGKILL, (r.returncode, r.stderr[-2000:])
    assert not (broken / "summary.json").exists()
    ckpt = torch.load(broken / "last.pt", weights_only=True)
    assert ckpt["position"] == {"epoch": 1, "batch": 2, "step": 8}  # mid-epoch

    r = _run(synthetic_root, broken)  # resume is automatic: last.pt exists
    assert r.returncode == 0, r.stderr[-2000:]
    assert "resuming from" in r.stdout and "at step 8 (epoch 1, batch 2)" in r.stdout

    a = torch.load(straight / "last.pt", weights_only=True)
    b = torch.load(broken / "last.pt", weights_only=True)
    assert a["position"] == b["position"] == {"epoch": 1, "batch": 4, "step": 10}
    for key, value in a["model"].items():
        assert torch.allclose(value.float(), b["model"][key].float(), rtol=0, atol=1e-6), key
    for sa, sb in zip(a["optimizer"]["state"].values(), b["optimizer"]["state"].values()):
        assert torch.allclose(sa["exp_avg"], sb["exp_avg"], rtol=0, atol=1e-9)
    assert a["scheduler"]["last_epoch"] == b["scheduler"]["last_epoch"] == 10
    # the loss curve (steps 9-10 replayed) and the final metrics agree too
    ra, rb = _rows(straight / "metrics.csv"), _rows(broken / "metrics.csv")
    assert [r["step"] for r in rb] == [str(i) for i in range(1, 11)]  # no duplicate rows for step 9
    for x, y in zip(ra, rb):
        assert abs(float(x["total"]) - float(y["total"])) <= 1e-6 * max(1.0, abs(float(x["total"])))
    ea, eb = _rows(straight / "eval.csv"), _rows(broken / "eval.csv")
    assert ea[-1]["AP"] == eb[-1]["AP"]
