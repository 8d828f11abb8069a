"""The benchmark scripts run (tiny settings) and print their tables: they must not rot."""
from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]


def run(*args: str) -> str:
    proc = subprocess.run([sys.executable, *args], cwd=REPO, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-2000:]
    return proc.stdout


@pytest.mark.slow
def test_bench_foundation_prints_data_and_codec_rows():
    out = run("benchmarks/bench_foundation.py", "--quick")
    crops = [ln.split() for ln in out.splitlines() if ln.strip().startswith("192x192")]
    assert {(row[1], row[2]) for row in crops} == {("128x96", "0"), ("128x96", "2"), ("256x192", "0"),
                                                   ("256x192", "2")}, out
    assert all(float(row[3]) > 0 for row in crops), out
    for row in ("encode reference", "encode unbiased", "decode quarter", "vs reference", "decode dark"):
        line = next((ln for ln in out.splitlines() if ln.startswith("|") and row in ln), None)
        assert line is not None, f"row {row!r} missing:\n{out}"
        assert line.count("x |") == 2, line


@pytest.mark.slow
def test_bench_distill_prints_each_term():
    out = run("benchmarks/bench_distill.py", "--device", "cpu", "--student", "quick-student",
              "--teacher", "quick-teacher", "--batch", "2", "--repeats", "1", "--loss-reps", "1")
    for row in ("plain", "+teacher", "+logit", "+feature", "+structure", "+all"):
        assert any(ln.startswith(row) for ln in out.splitlines()), f"row {row!r} missing:\n{out}"
    assert "structure term" in out and "% of plain" in out


def test_gpu_train_smoke_on_cpu_runs_the_engine_loop(tmp_path):
    """gpu_train.py at a tiny size on the CPU: data-only, the engine's teacher/student/IKD runs, tensor-only."""
    import json

    out = tmp_path / "gpu_train.json"
    run("benchmarks/gpu_train.py", "--device", "cpu", "--tiny", "--json", str(out))
    res = json.loads(out.read_text())
    assert res["data_host_crops_s"] > 0 and res["data_device_crops_s"] > 0
    for role in ("e2e_teacher", "e2e_student", "e2e_ikd"):
        assert res[role]["steps"] == 4 and res[role]["img_s"] > 0, res[role]
    for key in ("teacher_train_img_s", "student_train_img_s", "ikd_train_img_s", "ikd_cached_teacher_train_img_s",
                "teacher_infer_b1_img_s", "student_infer_b4_img_s"):
        assert res[key] > 0, key
