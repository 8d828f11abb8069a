"""Full mode resolves to the paper's models (R50 teacher, R18 student, 256x192, device pipeline) and trains on CPU."""
from __future__ import annotations

from ikd_edu import course


def _tiny_full_mode(monkeypatch, tmp_path) -> course.Mode:
    monkeypatch.setenv(course.DIR_ENV, str(tmp_path))
    tiny = dict(course.FULL, images=6, val_images=2, label_subset=3, teacher_steps=2, student_steps=2,
                batch_size=2, num_workers=0, image_size=(96, 128), input_size=(64, 64))
    return course.Mode(False, "cpu", "test: full-mode settings at a tiny size", settings=tiny)


def test_full_mode_settings_resolve_to_the_paper_models():
    mode = course.Mode(False, "cuda", "test", settings=dict(course.FULL))
    over = dict(o.split("=", 1) for o in course.paper_overrides(mode))
    assert over["model.teacher"] == "simplebaseline-r50" and over["model.student"] == "student"
    assert over["data.input_size"] == "256,192" and over["data.heatmap_size"] == "64,48"
    assert over["data.synthetic_image_size"] == "480,640" and over["data.pipeline"] == "device"
    assert course.paper_overrides(course.Mode(True, "cpu", "quick", settings=dict(course.QUICK))) == []


def test_full_mode_trains_the_paper_teacher_and_an_ikd_student_two_steps(monkeypatch, tmp_path):
    mode = _tiny_full_mode(monkeypatch, tmp_path)
    _, t_summary = course.teacher(mode)  # full mode: trains the R50 teacher (no released one fits)
    t_cfg = course.config(mode, "teacher")
    assert t_cfg.model.teacher == "simplebaseline-r50" and tuple(t_cfg.data.input_size) == (64, 64)
    assert t_cfg.data.pipeline == "device" and t_summary["steps"] == 2
    s_cfg = course.config(mode, "student", terms=("logit", "feature", "structure"))
    assert s_cfg.model.student == "student" and s_cfg.model.teacher_checkpoint == str(course.teacher_checkpoint(mode))
    _, s_summary = course.student(mode, terms=("logit", "feature", "structure"))
    assert s_summary["steps"] == 2
