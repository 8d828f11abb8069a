"""Fingerprint of short deterministic CPU trainings: a refactor of the engine must not change it.

    OMP_NUM_THREADS=1 python scripts/fingerprint_run.py --json fingerprint.json

Runs, each through the CLI (``python -m ikd_edu.cli train ...``, as a user would), on a small
synthetic set (160 train / 64 val images) and a tiny MPII fixture (tests/test_mpii.py):

* ``teacher``: quick-teacher, default augmentation, 24 steps, last.pt every 8, AP every 12;
* ``teacher-resumed``: the same run killed right after step 13 (``IKD_EDU_KILL_AFTER_STEP``)
  and resumed from step 8; must equal ``teacher``;
* ``student-ikd``: logit + feature + structure from the teacher's best.pt, as the quickstart
  trains its students (label subset, flip-only augmentation, teacher and crop caches);
* ``student-onthefly``: logit + structure with the teacher run on every batch;
* ``student-labels``: no distillation;
* ``mpii-teacher``: the MPII preset with quick-teacher on the fixture (PCKh).

For every run: sha256 of each checkpoint's tensors (model, loss module, optimizer; keys in
sorted order, tensor bytes - not the file bytes, which hold timings), its position / best /
metrics, the summary's best and final metrics (``repr``: every digit), sha256 of
metrics.csv / eval.csv, and the console output with seconds and temporary paths masked.
Same machine + same code = the same JSON; ``diff`` two of them after a refactor.
"""
from __future__ import annotations

import argparse
import hashlib
import json
import os
import re
import subprocess
import sys
import tempfile
from pathlib import Path

import torch

REPO = Path(__file__).resolve().parents[1]
COMMON = {"data.num_workers": 0, "run.tensorboard": "false", "run.progress": "off", "run.deterministic": "true",
          "run.eval_batch_size": 32}
SYNTH = {"data.root": None, "data.synthetic_images": 160, "data.synthetic_val_images": 64,
         "optim.batch_size": 16}
FLIP_ONLY = {"data.augment.scale_factor": 0, "data.augment.rotation_prob": 0, "data.augment.half_body_prob": 0}


def _tensor_items(prefix: str, obj):
    """``(name, tensor)`` for every tensor in a nested dict / list, names sorted."""
    if isinstance(obj, torch.Tensor):
        yield prefix, obj
    elif isinstance(obj, dict):
        for k in sorted(obj, key=str):
            yield from _tensor_items(f"{prefix}.{k}", obj[k])
    elif isinstance(obj, (list, tuple)):
        for i, v in enumerate(obj):
            yield from _tensor_items(f"{prefix}.{i}", v)


def tensor_hash(obj) -> str:
    h = hashlib.sha256()
    for name, t in _tensor_items("", obj):
        t = t.detach().cpu().contiguous().reshape(-1)
        h.update(f"{name}|{t.dtype}|{tuple(t.shape)}|".encode())
        h.update(t.view(torch.uint8).numpy().tobytes() if t.numel() else b"")
    return h.hexdigest()


def file_hash(path: Path) -> str | None:
    return hashlib.sha256(path.read_bytes()).hexdigest() if path.is_file() else None


def checkpoint_print(path: Path) -> dict | None:
    if not path.is_file():
        return None
    ckpt = torch.load(path, map_location="cpu", weights_only=True)
    out = {k: tensor_hash(ckpt[k]) for k in ("model", "distill", "optimizer") if k in ckpt}
    if "scheduler" in ckpt:
        out["scheduler"] = repr(sorted((k, v) for k, v in ckpt["scheduler"].items() if not callable(v)))
    if "rng" in ckpt:
        out["rng"] = tensor_hash(ckpt["rng"])
    for k in ("position", "best", "metrics", "model_name", "input_channels", "format"):
        out[k] = repr(ckpt.get(k))
    return out


def run_print(out: Path, stdout: str, tmp: Path) -> dict:
    text = stdout.replace(str(tmp), "<tmp>")
    text = re.sub(r"\d+(\.\d+)? s\b", "<t> s", text)
    text = re.sub(r"\d+(\.\d+)? ms\b", "<t> ms", text)
    summary = json.loads((out / "summary.json").read_text()) if (out / "summary.json").is_file() else {}
    return {
        "last": checkpoint_print(out / "last.pt"),
        "best_ckpt": checkpoint_print(out / "best.pt"),
        "best": repr(summary.get("best")),
        "final": repr(summary.get("final")),
        "steps": summary.get("steps"),
        "metrics_csv": file_hash(out / "metrics.csv"),
        "eval_csv": file_hash(out / "eval.csv"),
        "val_results": file_hash(out / "val_results.json"),
        "stdout": text.splitlines(),
    }


def train(role: str, preset: str, sets: dict, out: Path, kill_after: int | None = None) -> subprocess.CompletedProcess:
    argv = [sys.executable, "-m", "ikd_edu.cli", "train", role, "--preset", preset, "--out", str(out)]
    for k, v in {**COMMON, **sets}.items():
        argv += ["--set", f"{k}={v}"]
    env = dict(os.environ, OMP_NUM_THREADS="1", PYTHONPATH=str(REPO))
    env.pop("IKD_EDU_KILL_AFTER_STEP", None)
    if kill_after:
        env["IKD_EDU_KILL_AFTER_STEP"] = str(kill_after)
    r = subprocess.run(argv, env=env, capture_output=True, text=True, timeout=600, cwd=REPO)
    if kill_after is None and r.returncode != 0:
        raise SystemExit(f"{role} {out.name} failed ({r.returncode}):\n{r.stderr[-3000:]}")
    return r


def fingerprint(tmp: Path) -> dict:
    from ikd_edu.data.synthetic import generate_synthetic

    data = tmp / "synthetic"
    generate_synthetic(data, SYNTH["data.synthetic_images"], seed=0, val_images=SYNTH["data.synthetic_val_images"],
                       progress=False, workers=1)
    synth = {**SYNTH, "data.root": str(data)}
    result: dict = {}

    teacher = {**synth, "optim.steps": 24, "run.ckpt_every": 8, "run.eval_every": 12, "run.log_every": 4,
               "run.seed": 1}
    r = train("teacher", "quick", teacher, tmp / "teacher")
    result["teacher"] = run_print(tmp / "teacher", r.stdout, tmp)

    killed = train("teacher", "quick", teacher, tmp / "teacher-resumed", kill_after=13)
    r = train("teacher", "quick", teacher, tmp / "teacher-resumed")
    result["teacher-resumed"] = run_print(tmp / "teacher-resumed", killed.stdout + r.stdout, tmp)
    result["teacher-resumed"]["killed_rc"] = killed.returncode
    same = {k: result["teacher"][k] == result["teacher-resumed"][k] for k in ("last", "best_ckpt", "final", "metrics_csv")}
    result["teacher-resumed"]["equals_uninterrupted"] = same

    ckpt = str(tmp / "teacher" / "best.pt")
    ikd = {**synth, **FLIP_ONLY, "data.label_subset": 60, "data.subset_seed": 0, "distill.terms": "logit,feature,structure",
           "distill.teacher_cache": "true", "data.cache_crops": "true", "model.teacher_checkpoint": ckpt,
           "optim.steps": 20, "run.eval_every": 10, "run.ckpt_every": 10, "run.log_every": 5,
           "run.magnitude_batches": 2, "run.seed": 2}
    r = train("student", "quick", ikd, tmp / "student-ikd")
    result["student-ikd"] = run_print(tmp / "student-ikd", r.stdout, tmp)

    fly = {**synth, "distill.terms": "logit,structure", "model.teacher_checkpoint": ckpt, "distill.decay": "cosine",
           "optim.steps": 10, "run.eval_every": 10, "run.ckpt_every": 5, "run.log_every": 3, "run.seed": 3}
    r = train("student", "quick", fly, tmp / "student-onthefly")
    result["student-onthefly"] = run_print(tmp / "student-onthefly", r.stdout, tmp)

    labels = {**synth, "optim.steps": 8, "run.eval_every": 8, "run.ckpt_every": 4, "run.log_every": 2, "run.seed": 4}
    r = train("student", "quick", labels, tmp / "student-labels")
    result["student-labels"] = run_print(tmp / "student-labels", r.stdout, tmp)

    sys.path.insert(0, str(REPO / "tests"))
    from test_mpii import make_mpii

    mpii = make_mpii(tmp / "mpii", n_val=4, n_train=8)
    m = {"data.root": str(mpii), "model.teacher": "quick-teacher", "model.pretrained": "", "data.input_size": "128x128",
         "data.heatmap_size": "32x32", "optim.steps": 4, "optim.batch_size": 4, "run.eval_every": 2,
         "run.ckpt_every": 2, "run.log_every": 1, "run.seed": 5}
    r = train("teacher", "mpii-r50-256x256", m, tmp / "mpii-teacher")
    result["mpii-teacher"] = run_print(tmp / "mpii-teacher", r.stdout, tmp)
    return result


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--json", default=None, help="write the fingerprint here (else stdout)")
    parser.add_argument("--keep", default=None, help="run in this folder and keep it (else a temporary one)")
    args = parser.parse_args()
    torch.set_num_threads(1)
    if args.keep:
        tmp = Path(args.keep).resolve()
        tmp.mkdir(parents=True, exist_ok=False)
        result = fingerprint(tmp)
    else:
        with tempfile.TemporaryDirectory(prefix="ikd-fp-") as d:
            result = fingerprint(Path(d))
    text = json.dumps(result, indent=1, sort_keys=True) + "\n"
    if args.json:
        Path(args.json).write_text(text)
        print(f"wrote {args.json}; sha256 {hashlib.sha256(text.encode()).hexdigest()}")
    else:
        print(text, end="")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
