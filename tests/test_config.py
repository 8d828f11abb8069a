"""Config: presets load, overrides are type-checked, mistakes stop before training with one line."""
from __future__ import annotations

import subprocess
import sys

import pytest
import torch

from ikd_edu.errors import UserError
from ikd_edu.train.config import Config, config_from_dict, config_to_dict, list_presets, load_config, save_config


def test_bundled_presets_load():
    assert {"quick", "coco-r50-256x192", "mpii-r50-256x256"} <= set(list_presets())
    quick = load_config("quick", role="teacher")
    assert quick.data.input_size == (128, 96) and quick.data.heatmap_size == (32, 24)
    assert quick.model.teacher == "quick-teacher" and quick.model.student == "quick-student"
    assert quick.optim.schedule == "onecycle" and quick.optim.steps == 1500 and quick.optim.lr == 2e-3
    coco = load_config("coco-r50-256x192", role="teacher")
    assert coco.model.teacher == "simplebaseline-r50" and coco.model.student == "student"
    assert (coco.optim.lr, coco.optim.epochs, coco.optim.milestones, coco.optim.batch_size) == (1e-3, 140, [90, 120], 32)
    assert coco.run.flip_test and coco.num_joints == 17
    mpii = load_config("mpii-r50-256x256", role="teacher")
    assert mpii.num_joints == 16 and mpii.data.input_size == (256, 256)


def test_overrides_convert_types():
    cfg = load_config("quick", ["optim.lr=1e-3", "data.input_size=64x64", "data.heatmap_size=16x16",
                                "run.deterministic=true", "run.resume=off", "optim.milestones=[3, 5]",
                                "model.student_options={widths: [8, 8, 8, 16]}"], role="teacher")
    assert cfg.optim.lr == 1e-3 and isinstance(cfg.optim.lr, float)
    assert cfg.data.input_size == (64, 64) and cfg.run.deterministic is True and cfg.run.resume == "off"
    assert cfg.optim.milestones == [3, 5] and cfg.model.student_options == {"widths": [8, 8, 8, 16]}
    assert cfg.role == "teacher" and cfg.distill.terms == []
    assert cfg.run.out_dir.endswith("teacher")


def test_terms_are_normalised(tmp_path):
    ckpt = tmp_path / "t.pt"
    from ikd_edu.models import build_model

    torch.save(build_model("quick-teacher").state_dict(), ckpt)
    cfg = load_config("quick", ["distill.terms=structure,LOGIT", f"model.teacher_checkpoint={ckpt}"])
    assert cfg.distill.terms == ["logit", "structure"] and cfg.is_distillation
    cfg = load_config("quick", ["distill.terms=all", f"model.teacher_checkpoint={ckpt}"])
    assert cfg.distill.terms == ["logit", "feature", "structure"]
    assert load_config("quick", ["distill.terms=none"]).distill.terms == []


@pytest.mark.parametrize(
    "override, message",
    [
        ("optim.lrr=1", "unknown key 'optim.lrr' (did you mean 'optim.lr'?)"),
        ("optim.lr=abc", "optim.lr: expected a float, got 'abc'"),
        ("optim.batch_size=3.5", "optim.batch_size: expected an integer"),
        ("optim.batch_size=0", "optim.batch_size: must be > 0"),
        ("run.amp=fp8", "run.amp: expected one of auto, bf16, fp16, off"),
        ("data.input_size=128", "data.input_size: expected 2 integers"),
        ("data.heatmap_size=30x20", "data.heatmap_size: the models output input/4"),
        ("model.student=resnet9000", "model.student: unknown model 'resnet9000'"),
        ("distill.terms=logit,magic", "distill.terms: unknown term 'magic'"),
        ("run.deterministic=maybe", "run.deterministic: expected a boolean"),
        ("nonsense", "must look like key=value"),
    ],
)
def test_bad_values_are_one_line_errors(override, message):
    with pytest.raises(UserError) as info:
        load_config("quick", [override], role="student")  # labels-only student: no teacher needed
    text = str(info.value)
    assert message in text and "\n" not in text


def test_unknown_preset_and_yaml_key(tmp_path):
    with pytest.raises(UserError, match="unknown preset 'nope'"):
        load_config("nope")
    bad = tmp_path / "bad.yaml"
    bad.write_text("optim:\n  learning_rate: 0.1\n")
    with pytest.raises(UserError, match="unknown key 'optim.learning_rate'"):
        load_config(str(bad))


def test_missing_teacher_checkpoint_names_path_and_command(tmp_path):
    missing = tmp_path / "teacher" / "best.pt"
    with pytest.raises(UserError) as info:
        load_config("quick", ["distill.terms=logit", f"model.teacher_checkpoint={missing}"])
    text = str(info.value)
    assert str(missing) in text and "ikd-edu train teacher --preset quick" in text and "\n" not in text
    # a labels-only student needs no teacher
    load_config("quick", [f"model.teacher_checkpoint={missing}"])


def test_teacher_student_joint_count_mismatch(tmp_path):
    from ikd_edu.models import build_model

    ckpt = tmp_path / "mpii_teacher.pt"
    torch.save({"state_dict": build_model("quick-teacher", num_joints=16).state_dict()}, ckpt)
    with pytest.raises(UserError) as info:
        load_config("quick", ["distill.terms=logit", f"model.teacher_checkpoint={ckpt}"])
    assert "16 joints" in str(info.value) and "needs 17" in str(info.value)


def test_config_yaml_roundtrip(tmp_path):
    import yaml

    cfg = load_config("quick", ["optim.lr=3e-4", "data.label_subset=500"], role="teacher")
    save_config(cfg, tmp_path / "config.yaml")
    again = config_from_dict(yaml.safe_load((tmp_path / "config.yaml").read_text()))
    assert config_to_dict(again) == config_to_dict(cfg)
    assert isinstance(Config().data.augment.flip_prob, float)


def _cli(*argv, cwd):
    return subprocess.run([sys.executable, "-m", "ikd_edu.cli", *argv], capture_output=True, text=True, cwd=cwd,
                          timeout=120)


def test_cli_errors_exit_2_with_one_line(tmp_path, monkeypatch, capsys):
    # one real subprocess: the exit status and stderr a user sees
    r = _cli("train", "student", "--preset", "quick", "--distill", "logit,feature", cwd=tmp_path)
    assert r.returncode == 2 and len(r.stderr.strip().splitlines()) == 1
    assert "runs/quick/teacher/best.pt not found" in r.stderr and "ikd-edu train teacher --preset quick" in r.stderr
    assert not (tmp_path / "runs").exists()  # nothing started
    # the rest in-process (same code path, no interpreter start-up)
    from ikd_edu.cli import main

    monkeypatch.chdir(tmp_path)
    assert main(["train", "teacher", "--preset", "quick", "--set", "optim.lr=abc"]) == 2
    assert capsys.readouterr().err.strip() == "ikd-edu: error: optim.lr: expected a float, got 'abc'"
    assert main(["ablation", "--preset", "quick", "--set", "optim.lrr=1"]) == 2
    assert "did you mean 'optim.lr'" in capsys.readouterr().err
    assert main(["train", "student", "--preset", "quick", "--distill", "logit", "--print-config"]) == 0
    assert "terms:\n  - logit" in capsys.readouterr().out
