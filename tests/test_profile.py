"""Profile: parameter and true-MAC counts against the published figures; the CLI."""
from __future__ import annotations

import json

import pytest

from ikd_edu import cli
from ikd_edu.models import build_model
from ikd_edu.profile import count_macs, count_params, measure_latency, profile_models


def test_simplebaseline_r50_and_student_budget():
    r50 = build_model("simplebaseline-r50")
    r50_params, r50_macs = count_params(r50), count_macs(r50, (256, 192))
    assert abs(r50_params / 1e6 - 34.00) <= 0.05
    assert abs(r50_macs / 1e9 - 5.43) <= 0.05
    student = build_model("student")
    s_params, s_macs = count_params(student), count_macs(student, (256, 192))
    assert abs(s_params / 1e6 - 11.83) <= 0.02 and abs(s_macs / 1e9 - 1.87) <= 0.02
    assert s_params <= 0.35 * r50_params and s_macs <= 0.35 * r50_macs
    mobile = build_model("student-mobilenetv3")
    assert count_params(mobile) <= 0.35 * r50_params and count_macs(mobile, (256, 192)) <= 0.35 * r50_macs


def test_quick_models_and_mac_scaling():
    teacher, student = build_model("quick-teacher"), build_model("quick-student")
    assert abs(count_params(teacher) / 1e6 - 3.85) < 0.02
    assert abs(count_params(student) / 1e6 - 0.573) < 0.005
    macs = count_macs(student, (128, 96))
    assert abs(macs / 1e6 - 37.2) < 0.5
    assert count_macs(student, (128, 96), batch=2) == 2 * macs
    assert student.training  # count_macs restores the mode


def test_latency_and_profile_rows():
    model = build_model("quick-student")
    assert measure_latency(model, (64, 64), batch=1, device="cpu", warmup=0, iters=2) > 0
    rows = profile_models(["quick-teacher", "quick-student"], (128, 96), batch_sizes=(1,), device="cpu", warmup=0, iters=1)
    assert [r["name"] for r in rows] == ["quick-teacher", "quick-student"]
    assert rows[0]["params_ratio"] == 1.0 and rows[0]["latency_ratio"] == {1: 1.0}
    assert 0.1 < rows[1]["params_ratio"] < 0.2 and rows[1]["latency_ms"][1] > 0


def test_cli_json(capsys):
    rc = cli.main(["profile", "--models", "quick-teacher,quick-student", "--input", "128x96", "--no-latency", "--json"])
    assert rc == 0
    rows = json.loads(capsys.readouterr().out)
    assert [r["name"] for r in rows] == ["quick-teacher", "quick-student"]
    assert rows[1]["macs_ratio"] < 0.25 and "latency_ms" not in rows[0]


def test_cli_table_with_latency(capsys):
    rc = cli.main(["profile", "--models", "quick-student", "--input", "64x64", "--batch", "1,2", "--warmup", "0", "--iters", "1"])
    out = capsys.readouterr().out
    assert rc == 0 and "quick-student" in out and "ms @ b2" in out and "FLOPs / 2" in out


@pytest.mark.parametrize("argv, message", [
    (["--input", "256by192"], "--input must look like"),
    (["--input", "250x190"], "multiples of 32"),
    (["--models", "nope"], "unknown model"),
    (["--batch", "0"], "positive"),
])
def test_cli_bad_input(capsys, argv, message):
    assert cli.main(["profile", "--no-latency", *argv]) == 2
    assert message in capsys.readouterr().err
