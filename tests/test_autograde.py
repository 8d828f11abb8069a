"""Autograding end to end, with nbgrader's own pipeline on a throwaway course folder.

A small source notebook with two of the course's exercises (``logit_kd`` and the joint
relations, checked by the real ``ikd_edu.exercises`` checks plus nbgrader hidden tests with
hand-computed expected values) goes through

    ikd-edu assignments nbgrader generate_assignment   (no PATH set up: the wrapper finds alembic)
    three submissions: right / partly wrong / one that raises
    ikd-edu assignments nbgrader autograde --create
    ikd-edu assignments nbgrader generate_feedback

and the gradebook must hold 4/4, 2/4 (the wrong part 0) and 2/4 (the raising part 0). The
student version holds no solution and no hidden test; the feedback holds no solution code and
no hidden test.
"""
from __future__ import annotations

import os
import sys
from pathlib import Path

import nbformat
import pytest

from ikd_edu import assignments

pytest.importorskip("nbgrader", reason="nbgrader is part of the course extra: pip install -e '.[course]'")

REPO = Path(__file__).resolve().parents[1]
BEGIN, END = "### BEGIN SOLUTION", "### END SOLUTION"

LOGIT_SOLUTION = '''import torch


def logit_kd(student_hm, teacher_hm, target, target_weight, alpha):
    """(1 - alpha) * L_gt(S, G) + alpha * L_kd(S, T), a scalar tensor."""
    ### BEGIN SOLUTION
    weight_4d = target_weight[:, :, None, None]
    ground_truth_term = 0.5 * ((weight_4d * (student_hm - target)) ** 2).mean()
    teacher_term = 0.5 * ((student_hm - teacher_hm.detach()) ** 2).mean()
    return (1 - alpha) * ground_truth_term + alpha * teacher_term
    ### END SOLUTION
'''
LOGIT_CHECK = '''from ikd_edu.exercises import check_logit_kd

check_logit_kd(logit_kd)
### BEGIN HIDDEN TESTS
hidden_ones, hidden_zeros = torch.ones(1, 1, 2, 2), torch.zeros(1, 1, 2, 2)
hidden_value = float(logit_kd(hidden_ones, hidden_zeros + 0.5, hidden_zeros, torch.ones(1, 1), 0.5))
assert abs(hidden_value - 0.3125) < 1e-6, "a hand-computed case gives another value"
### END HIDDEN TESTS
'''
RELATIONS_SOLUTION = '''def joint_relations_of(heatmaps):
    """R_kl = cos(S_k, S_l) between flattened joint heatmaps: (N, K, h, w) -> (N, K, K)."""
    ### BEGIN SOLUTION
    flat_vectors = heatmaps.flatten(2)
    unit_vectors = flat_vectors / flat_vectors.norm(dim=-1, keepdim=True).clamp_min(1e-12)
    return unit_vectors @ unit_vectors.transpose(1, 2)
    ### END SOLUTION
'''
RELATIONS_CHECK = '''from ikd_edu.exercises import check_joint_relations

check_joint_relations(joint_relations_of)
### BEGIN HIDDEN TESTS
hidden_maps = torch.zeros(1, 2, 2, 2)
hidden_maps[0, 0, 0, 0], hidden_maps[0, 1, 1, 1] = 1.0, 2.0
assert torch.allclose(joint_relations_of(hidden_maps), torch.eye(2)[None].double().to(hidden_maps.dtype))
### END HIDDEN TESTS
'''
HIDDEN_LINES = ["hidden_ones, hidden_zeros", "0.3125", "hidden_maps[0, 0, 0, 0]", "torch.eye(2)"]

# what three students hand in (the code that replaces each `raise NotImplementedError()`)
SUBMISSIONS = {
    "alice": {  # right, written her own way
        "logit_kd_solution": "    import torch.nn.functional as F\n"
                             "    w = target_weight.unsqueeze(-1).unsqueeze(-1)\n"
                             "    return (1 - alpha) * 0.5 * F.mse_loss(w * student_hm, w * target) + "
                             "alpha * 0.5 * F.mse_loss(student_hm, teacher_hm.detach())\n",
        "joint_relations_solution": "    import torch.nn.functional as F\n"
                                    "    v = heatmaps.flatten(2)\n"
                                    "    return F.cosine_similarity(v.unsqueeze(2), v.unsqueeze(1), dim=-1)\n",
    },
    "bob": {  # logit right, relations not normalised
        "logit_kd_solution": "    w = target_weight[:, :, None, None]\n"
                             "    return (1 - alpha) * 0.5 * ((student_hm - target) * w).pow(2).mean() + "
                             "alpha * 0.5 * (student_hm - teacher_hm.detach()).pow(2).mean()\n",
        "joint_relations_solution": "    v = heatmaps.flatten(2)\n"
                                    "    return v @ v.transpose(1, 2)\n",
    },
    "carol": {  # logit raises, relations right
        "logit_kd_solution": "    return weighted_mse(student_hm, target) + alpha  # a helper she never wrote\n",
        "joint_relations_solution": "    import torch.nn.functional as F\n"
                                    "    u = F.normalize(heatmaps.flatten(2), dim=-1)\n"
                                    "    return u @ u.transpose(1, 2)\n",
    },
}
EXPECTED = {"alice": {"logit_kd_check": 2, "joint_relations_check": 2},
            "bob": {"logit_kd_check": 2, "joint_relations_check": 0},
            "carol": {"logit_kd_check": 0, "joint_relations_check": 2}}


def _cell(source: str, grade_id: str, solution: bool = False, points: int = 0):
    cell = nbformat.v4.new_code_cell(source)
    cell.metadata["nbgrader"] = {"grade": points > 0, "grade_id": grade_id, "locked": not solution,
                                 "schema_version": 3, "solution": solution, "task": False}
    if points:
        cell.metadata["nbgrader"]["points"] = points
    return cell


def _source_notebook():
    return nbformat.v4.new_notebook(cells=[
        nbformat.v4.new_markdown_cell("# A two-exercise assignment (tests/test_autograde.py)"),
        _cell(LOGIT_SOLUTION, "logit_kd_solution", solution=True),
        _cell(LOGIT_CHECK, "logit_kd_check", points=2),
        _cell(RELATIONS_SOLUTION, "joint_relations_solution", solution=True),
        _cell(RELATIONS_CHECK, "joint_relations_check", points=2),
    ], metadata={"kernelspec": {"display_name": "Python 3", "language": "python", "name": "python3"}})


def _solution_lines() -> list[str]:
    lines = []
    for source in (LOGIT_SOLUTION, RELATIONS_SOLUTION):
        inside = source.split(BEGIN, 1)[1].split(END, 1)[0]
        lines += [line.strip() for line in inside.splitlines() if len(line.strip()) >= 16]
    return lines


def _fill(released, answers: dict[str, str]):
    nb = nbformat.from_dict(released)
    for cell in nb.cells:
        grade_id = cell.get("metadata", {}).get("nbgrader", {}).get("grade_id")
        if grade_id in answers:
            stub = "    # YOUR CODE HERE\n    raise NotImplementedError()"
            assert stub in cell.source, cell.source
            cell.source = cell.source.replace(stub, answers[grade_id].rstrip("\n"))
    return nb


def _nbgrader(course: Path, *args: str):
    """The wrapper, from an environment whose PATH lacks the venv's bin folder (no activation)."""
    bin_dir = os.path.dirname(os.path.abspath(sys.executable))
    path = os.pathsep.join(p for p in os.environ.get("PATH", "").split(os.pathsep)
                           if p and os.path.abspath(p) != bin_dir) or "/usr/bin:/bin"
    env = dict(os.environ, PATH=path, PYTHONPATH=os.pathsep.join(
        [str(REPO)] + [p for p in os.environ.get("PYTHONPATH", "").split(os.pathsep) if p]))
    proc = assignments.run_nbgrader(list(args), cwd=course, env=env, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, f"nbgrader {' '.join(args)}:\n{proc.stdout[-3000:]}\n{proc.stderr[-5000:]}"
    return proc


def test_nbgrader_env_puts_this_interpreter_first():
    bin_dir = os.path.dirname(os.path.abspath(sys.executable))
    env = assignments.nbgrader_env({"PATH": f"/usr/bin{os.pathsep}{bin_dir}"})
    assert env["PATH"].split(os.pathsep) == [bin_dir, "/usr/bin"]
    assert assignments.nbgrader_env({})["PATH"] == bin_dir


@pytest.mark.slow
def test_autograde_end_to_end(tmp_path):
    course = tmp_path / "course"
    (course / "source" / "ikd").mkdir(parents=True)
    nbformat.write(_source_notebook(), course / "source" / "ikd" / "mini.ipynb")
    (course / "nbgrader_config.py").write_text(
        "c = get_config()\n"
        "c.CourseDirectory.course_id = 'ikd-edu-test'\n"
        f"c.CourseDirectory.root = {str(course)!r}\n"
        "c.Execute.timeout = 300  # per cell; a kernel's first torch import is slow on a busy 2-core machine\n"
        "from nbgrader.preprocessors import ClearHiddenTests, GetGrades\n"
        "from nbconvert.preprocessors import CSSHTMLHeaderPreprocessor\n"
        "from ikd_edu.assignments import ShortTracebacks\n"
        "c.GenerateFeedback.preprocessors = [GetGrades, ClearHiddenTests, ShortTracebacks, CSSHTMLHeaderPreprocessor]\n")

    # 1. the student version, made by nbgrader with no PATH set up
    _nbgrader(course, "generate_assignment", "ikd", "--force")
    released = nbformat.read(course / "release" / "ikd" / "mini.ipynb", as_version=4)
    text = "\n".join(c.source for c in released.cells)
    assert BEGIN not in text and "### BEGIN HIDDEN TESTS" not in text and "raise NotImplementedError()" in text
    for line in _solution_lines() + HIDDEN_LINES:
        assert line not in text, f"{line!r} is in the student version"
    assert not any(c.get("outputs") for c in released.cells)

    # 2. three submissions
    for student, answers in SUBMISSIONS.items():
        folder = course / "submitted" / student / "ikd"
        folder.mkdir(parents=True)
        nbformat.write(_fill(released, answers), folder / "mini.ipynb")

    # 3. autograde: real checks + hidden tests, in a fresh kernel per submission
    _nbgrader(course, "autograde", "ikd", "--create", "--force")
    from nbgrader.api import Gradebook

    with Gradebook(f"sqlite:///{course / 'gradebook.db'}") as gradebook:
        for student, expected in EXPECTED.items():
            scores = {cell: gradebook.find_grade(cell, "mini", "ikd", student).score for cell in expected}
            assert scores == expected, (student, scores)
            assert gradebook.find_submission("ikd", student).score == sum(expected.values())
            assert gradebook.find_submission("ikd", student).max_score == 4

    graded = {s: nbformat.read(course / "autograded" / s / "ikd" / "mini.ipynb", as_version=4) for s in SUBMISSIONS}

    def errors(student, grade_id):
        cell = next(c for c in graded[student].cells if c.metadata.get("nbgrader", {}).get("grade_id") == grade_id)
        return "\n".join(f"{o.get('ename')}: {o.get('evalue')}" for o in cell.outputs if o.output_type == "error")

    assert "joint_relations: not scale-invariant" in errors("bob", "joint_relations_check")
    assert "logit_kd raised NameError" in errors("carol", "logit_kd_check")
    assert errors("alice", "logit_kd_check") == errors("alice", "joint_relations_check") == ""

    # 4. feedback: the students' own code and the checks' diagnoses, never the solution or a hidden test
    _nbgrader(course, "generate_feedback", "ikd", "--force")
    for student in SUBMISSIONS:
        html = (course / "feedback" / student / "ikd" / "mini.html").read_text()
        assert "check_joint_relations" in html  # the visible check is shown
        for line in _solution_lines() + HIDDEN_LINES:
            assert line not in html, f"{student}'s feedback holds {line!r}"
    assert "not scale-invariant" in (course / "feedback" / "bob" / "ikd" / "mini.html").read_text()


def test_the_cli_runs_nbgrader_without_path_setup(capfd, monkeypatch):
    from ikd_edu.cli import main as cli_main

    bin_dir = os.path.dirname(os.path.abspath(sys.executable))
    monkeypatch.setenv("PATH", os.pathsep.join(p for p in os.environ.get("PATH", "").split(os.pathsep)
                                               if p and os.path.abspath(p) != bin_dir) or "/usr/bin:/bin")
    assert cli_main(["assignments", "nbgrader", "--", "--version"]) == 0
    assert "nbgrader version" in capfd.readouterr().out
