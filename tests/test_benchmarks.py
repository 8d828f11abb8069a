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
