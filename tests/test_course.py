"""The course helpers the notebooks stand on: the released teacher as the course's teacher, and
sentences that read results from their numbers."""
from __future__ import annotations

import json

import pytest
import torch

from ikd_edu import course


@pytest.fixture
def tiny_mode(tmp_path, monkeypatch):
    monkeypatch.setenv(course.DIR_ENV, str(tmp_path / "course"))
    settings = dict(course.QUICK, images=6, val_images=3, label_subset=4, teacher_steps=2, student_steps=2,
                    batch_size=4)
    return course.Mode(True, "cpu", "test", settings=settings)


def test_effect_reads_the_numbers():
    helps = course.effect(0.21, 0.164, "logit KD")
    assert helps.startswith("logit KD: AP 21.0 vs 16.4 for labels only (+4.6 AP): helps")
    assert "hurts" in course.effect(0.10, 0.16, "structure KD")
    assert "no clear effect" in course.effect(0.165, 0.16, "feature KD")
    assert "no clear effect" in course.effect(0.18, 0.16, "x", noise_ap=1.5)  # +2.0 within 2 x 1.5
    lines = course.compare({"labels only": {"final": {"AP": 0.1}}, "IKD": {"final": {"AP": 0.2}}})
    assert lines == [course.effect(0.2, 0.1, "IKD")]


def test_quickstart_summary_absent_or_malformed(tmp_path, monkeypatch):
    monkeypatch.setenv(course.QUICKSTART_ENV, str(tmp_path))
    assert course.quickstart_summary() == (tmp_path / "summary.json", None)
    (tmp_path / "summary.json").write_text("[1, 2]")
    assert course.quickstart_summary()[1] is None
    (tmp_path / "summary.json").write_text(json.dumps({"seeds": [0], "rows": []}))
    assert course.quickstart_summary()[1] == {"seeds": [0], "rows": []}


def test_the_course_teacher_is_the_released_one(tiny_mode, capsys):
    from ikd_edu.train import released

    model, summary = course.teacher(tiny_mode)
    out = capsys.readouterr().out
    assert "the released quick-teacher" in out and "on this course's 3" in out
    assert summary["final_checked"] and 0.0 <= summary["final"]["AP"] <= 1.0
    pack = torch.load(released.verify(), weights_only=True)
    for key, value in model.state_dict().items():  # the weights are the released ones
        if value.is_floating_point():
            assert torch.equal(value, pack["model"][key].float()), key
    assert course.teacher_checkpoint(tiny_mode).is_file()
    # the second call loads the installed run instead of evaluating again
    again, summary2 = course.teacher(tiny_mode)
    assert summary2["final"] == summary["final"]
    cfg = course.config(tiny_mode, "student", ["logit"])
    assert cfg.model.teacher_checkpoint == str(course.teacher_checkpoint(tiny_mode))


def test_the_capstone_ablation_trains_students_as_the_course_does(tiny_mode):
    """course.run_overrides (the capstone's `ikd-edu ablation --set ...`) is what config() uses for its students."""
    from ikd_edu.train.config import load_config

    sets = course.run_overrides(tiny_mode, "student", 7)
    assert "optim.steps=7" in sets and f"model.teacher_checkpoint={course.teacher_checkpoint(tiny_mode)}" in sets
    assert not any(s.startswith(("distill.terms=", "run.out_dir=")) for s in sets)  # the ablation sets those per run
    ablation_cfg = load_config("quick", sets + ["distill.terms=logit", "run.out_dir=x"], role="student",
                               check_files=False)
    course_cfg = course.config(tiny_mode, "student", ["logit"], steps=7)
    for section in ("data", "optim", "model", "distill"):
        assert getattr(ablation_cfg, section) == getattr(course_cfg, section), section


def test_data_root_can_show_progress(tiny_mode, capsys):
    root = course.data_root(tiny_mode, progress=True)
    assert (root / "annotations" / "person_keypoints_train.json").is_file()
    assert "synthetic images" in capsys.readouterr().err  # tqdm's bar, while the set is drawn
    assert course.data_root(tiny_mode) == root  # reused, no bar
    assert "synthetic images" not in capsys.readouterr().err
