"""Assignments: student versions via ikd-edu (nbgrader's preprocessors) and via nbgrader itself, and what
a student sees when a check cell runs.

(a) ``ikd-edu assignments build``: solutions gone, ``raise NotImplementedError()`` in their place,
    outputs cleared, check cells locked and unchanged; clear errors for bad folders.
(b) ``nbgrader generate_assignment`` on the source notebooks in a throwaway course folder (offline).
(c) the student versions executed with nbclient (up to their last check cell: the exercises sit
    before the training sections): every check cell says "not written yet"; the instructor's
    solutions, executed the same way, pass every check; a wrong answer gets its diagnosis.
"""
from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import nbformat
import pytest

from notebook_runner import NOTEBOOK_DIR, cell_seconds, execute

pytestmark = pytest.mark.slow  # notebook-driven: builds and executes the assignment notebooks

from ikd_edu import assignments, exercises
from ikd_edu.cli import main as cli_main

SOURCES = assignments.find_assignments(NOTEBOOK_DIR)
EXPECTED = {"01", "03", "04", "05", "06"}  # the notebooks with code exercises (solution + check cells)
TEXT_STUB = "YOUR ANSWER HERE"  # what nbgrader's ClearSolutions puts in a written answer
BEGIN, END = "### BEGIN SOLUTION", "### END SOLUTION"
HIDDEN_BEGIN, HIDDEN_END = "### BEGIN HIDDEN TESTS", "### END HIDDEN TESTS"
#: modules whose reference implementations a learner could wrap: not imported before the exercises
REFERENCE_MODULES = ("ikd_edu.distill", "ikd_edu.codec", "ikd_edu.train.engine")
CELL_TIMEOUT_S = 30  # nbgrader's default per-cell timeout (ExecutePreprocessor.timeout)


def _grader(cell) -> dict:
    return cell.get("metadata", {}).get("nbgrader", {})


def _solution_lines(cell) -> list[str]:
    """The non-blank lines between the solution markers of an instructor's cell."""
    lines, inside = [], False
    for line in cell.source.splitlines():
        if BEGIN in line:
            inside = True
        elif END in line:
            inside = False
        elif inside and line.strip():
            lines.append(line.strip())
    return lines


def _hidden_lines(cell) -> list[str]:
    """The non-blank lines of a check cell's hidden-test region."""
    if HIDDEN_BEGIN not in cell.source:
        return []
    inside = cell.source.split(HIDDEN_BEGIN, 1)[1].split(HIDDEN_END, 1)[0]
    return [line.strip() for line in inside.splitlines() if "hidden_" in line or "assert" in line]


def _without_hidden_tests(source: str) -> str:
    """What nbgrader's ClearHiddenTests leaves of a check cell."""
    if HIDDEN_BEGIN not in source:
        return source
    before, rest = source.split(HIDDEN_BEGIN, 1)
    return (before + rest.split(HIDDEN_END, 1)[1]).rstrip("\n")


def _code_checks(nb) -> list:
    return [c for c in nb.cells if _grader(c).get("grade") and c.cell_type == "code"]


def _check_cell_ids(nb) -> list[str]:
    return [_grader(c)["grade_id"] for c in nb.cells if _grader(c).get("grade")]


def test_every_assignment_notebook_is_found():
    assert {p.name[:2] for p in SOURCES} >= EXPECTED, [p.name for p in SOURCES]
    assert {p.name[:2] for p in SOURCES if _code_checks(nbformat.read(p, as_version=4))} == EXPECTED
    for path in SOURCES:
        nb = nbformat.read(path, as_version=4)
        solutions = [c for c in nb.cells if _grader(c).get("solution") and c.cell_type == "code"]
        checks = _code_checks(nb)
        if path.name[:2] in EXPECTED:  # the capstone's solution cell is graded by hand, with its report
            assert len(checks) >= len(solutions), path.name
        for cell in checks:
            assert _grader(cell)["locked"] and _grader(cell)["points"] > 0, (path.name, _grader(cell))
            assert "from ikd_edu.exercises import check_" in cell.source, (path.name, cell.source)
        for cell in solutions:
            assert BEGIN in cell.source and END in cell.source, (path.name, cell.source)


def test_every_notebook_has_written_questions():
    """1-2 manually graded answer cells per course notebook (markdown solution cells with points)."""
    notebooks = sorted(NOTEBOOK_DIR.glob("[0-9][0-9]_*.ipynb"))
    for path in notebooks:
        nb = nbformat.read(path, as_version=4)
        written = [c for c in nb.cells if c.cell_type == "markdown" and _grader(c).get("solution")]
        assert 1 <= len(written) <= 2, (path.name, len(written))
        for cell in written:
            g = _grader(cell)
            assert g["grade"] and g["points"] > 0 and not g["locked"] and not g["task"], (path.name, g)
            assert BEGIN in cell.source and END in cell.source, (path.name, cell.source)
    assert {p for p in notebooks} <= set(SOURCES), "every notebook with a written question is an assignment"


@pytest.mark.parametrize("path", SOURCES, ids=[p.stem for p in SOURCES])
def test_every_check_cell_has_hidden_tests(path):
    """Hand-computed expected values the student version does not show (nbgrader's hidden tests)."""
    for cell in nbformat.read(path, as_version=4).cells:
        if _grader(cell).get("grade") and cell.cell_type == "code":
            assert HIDDEN_BEGIN in cell.source and HIDDEN_END in cell.source, (path.name, _grader(cell)["grade_id"])
            hidden = cell.source.split(HIDDEN_BEGIN, 1)[1]
            assert "assert" in hidden, (path.name, _grader(cell)["grade_id"])
            assert not any(m in hidden for m in REFERENCE_MODULES), "hidden tests compute their own expected values"


@pytest.mark.parametrize("path", SOURCES, ids=[p.stem for p in SOURCES])
def test_no_reference_import_before_the_exercises(path):
    """A one-line wrapper needs the reference in scope: no code cell before the last check imports it."""
    nb = nbformat.read(path, as_version=4)
    checks = [i for i, c in enumerate(nb.cells) if _grader(c).get("grade") and c.cell_type == "code"]
    if not checks:
        return  # written questions only: nothing to wrap
    last = max(checks)
    for i, cell in enumerate(nb.cells[:last]):
        if cell.cell_type == "code":
            for module in REFERENCE_MODULES:
                assert module not in cell.source, f"{path.name} cell {i} imports {module} before the exercises"
            for name, module in _public_imports(cell.source):
                assert not module.startswith(REFERENCE_MODULES), \
                    f"{path.name} cell {i} imports {name} (from {module}) before the exercises"


def _public_imports(source: str) -> list[tuple[str, str]]:
    """``(name, defining module)`` of every ``from ikd_edu import name`` (the lazy public API)."""
    import ast

    import ikd_edu

    code = "\n".join(line for line in source.splitlines() if not line.lstrip().startswith(("%", "!")))
    return [(a.name, ikd_edu._EXPORTS.get(a.name, f"ikd_edu.{a.name}"))
            for node in ast.walk(ast.parse(code))
            if isinstance(node, ast.ImportFrom) and node.module == "ikd_edu" for a in node.names]


def test_the_reference_import_check_sees_the_public_api():
    # a wrapper around the library's affinity, imported through the facade, must be caught
    assert ("pairwise_affinity", "ikd_edu.distill.structure") in _public_imports("from ikd_edu import viz, pairwise_affinity")


# ------------------------------------------------------------------------------------------ (a)
@pytest.fixture(scope="module")
def student_dir(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("student")
    assert cli_main(["assignments", "build", "--out", str(out), "--notebooks", str(NOTEBOOK_DIR)]) == 0
    return out


def test_build_writes_student_versions_without_solutions(student_dir):
    written = sorted(p.name for p in student_dir.glob("*.ipynb"))
    assert written == sorted(p.name for p in SOURCES)
    assert not list(student_dir.glob(".*tmp")), "a temporary file was left behind"
    for src in SOURCES:
        source_nb = nbformat.read(src, as_version=4)
        student_nb = nbformat.read(student_dir / src.name, as_version=4)
        nbformat.validate(student_nb)
        assert len(student_nb.cells) == len(source_nb.cells)
        text = "\n".join(c.source for c in student_nb.cells)
        assert BEGIN not in text and END not in text, src.name
        for before, after in zip(source_nb.cells, student_nb.cells):
            assert not after.get("outputs"), f"{src.name}: outputs left in the student version"
            if _grader(before).get("solution") and before.cell_type == "markdown":
                assert TEXT_STUB in after.source and BEGIN not in after.source, (src.name, after.source)
                assert after.metadata.get("deletable") is False
            elif _grader(before).get("solution"):
                assert assignments.STUB in after.source, (src.name, after.source)
                for line in _solution_lines(before):
                    assert line not in after.source, f"{src.name}: solution line {line!r} survived"
                assert after.metadata.get("deletable") is False
            elif _grader(before).get("grade") and before.cell_type == "code":
                assert after.source == _without_hidden_tests(before.source), f"{src.name}: a check cell changed"
                assert HIDDEN_BEGIN not in after.source and HIDDEN_END not in after.source, src.name
                for line in _hidden_lines(before):
                    assert line not in text, f"{src.name}: hidden test line {line!r} survived"
                assert after.metadata.get("editable") is False and after.metadata.get("deletable") is False
                assert _grader(after).get("checksum"), "check cells carry nbgrader checksums"
            else:
                assert after.source == before.source


def test_build_refuses_bad_folders(tmp_path, capsys):
    assert cli_main(["assignments", "build", "--out", str(tmp_path / "o"), "--notebooks", str(tmp_path / "nope")]) == 2
    assert "does not exist" in capsys.readouterr().err
    empty = tmp_path / "empty"
    empty.mkdir()
    assert cli_main(["assignments", "build", "--out", str(tmp_path / "o"), "--notebooks", str(empty)]) == 2
    assert "no .ipynb notebooks" in capsys.readouterr().err
    plain = tmp_path / "plain"
    plain.mkdir()
    nb = nbformat.v4.new_notebook(cells=[nbformat.v4.new_code_cell("print(1)")])
    nbformat.write(nb, plain / "x.ipynb")
    assert cli_main(["assignments", "build", "--out", str(tmp_path / "o"), "--notebooks", str(plain)]) == 2
    assert "nbgrader solution cells" in capsys.readouterr().err
    assert cli_main(["assignments", "build", "--out", str(plain), "--notebooks", str(plain)]) == 2
    assert not (tmp_path / "o").exists(), "nothing is written when the input is bad"


def test_build_reports_an_unterminated_solution(tmp_path, capsys):
    folder = tmp_path / "broken"
    folder.mkdir()
    cell = nbformat.v4.new_code_cell(f"def f():\n    {BEGIN}\n    return 1\n")
    cell.metadata["nbgrader"] = {"grade": False, "grade_id": "f_solution", "locked": False, "schema_version": 3,
                                 "solution": True, "task": False}
    nbformat.write(nbformat.v4.new_notebook(cells=[cell], metadata={"kernelspec": {
        "display_name": "Python 3", "language": "python", "name": "python3"}}), folder / "b.ipynb")
    assert cli_main(["assignments", "build", "--out", str(tmp_path / "o"), "--notebooks", str(folder)]) == 2
    assert "END SOLUTION" in capsys.readouterr().err


def test_build_writes_files_readable_by_all(tmp_path):
    """Hand-outs are 0644 under the usual umask (a temp file + rename would leave them 0600)."""
    folder = tmp_path / "nb"
    folder.mkdir()
    cell = nbformat.v4.new_code_cell(f"def f():\n    {BEGIN}\n    return 1\n    {END}\n")
    cell.metadata["nbgrader"] = {"grade": False, "grade_id": "f_solution", "locked": False, "schema_version": 3,
                                 "solution": True, "task": False}
    nbformat.write(nbformat.v4.new_notebook(cells=[cell], metadata={"kernelspec": {
        "display_name": "Python 3", "language": "python", "name": "python3"}}), folder / "a.ipynb")
    previous = os.umask(0o022)
    try:
        written = assignments.build(tmp_path / "out", folder)
    finally:
        os.umask(previous)
    assert [p.name for p in written] == ["a.ipynb"]
    assert (written[0].stat().st_mode & 0o777) == 0o644, oct(written[0].stat().st_mode)


# ------------------------------------------------------------------------------------------ (b)
def test_nbgrader_generate_assignment_on_the_sources(tmp_path):
    nbgrader = Path(sys.executable).parent / "nbgrader"
    if not nbgrader.is_file():
        pytest.skip("nbgrader is not installed in this environment (pip install -e '.[course]')")
    course = tmp_path / "course"
    source = course / "source" / "ikd"
    source.mkdir(parents=True)
    for path in SOURCES:
        shutil.copy(path, source / path.name)
    (course / "nbgrader_config.py").write_text(
        "c = get_config()\n"
        "c.CourseDirectory.course_id = 'ikd-edu'\n"
        f"c.CourseDirectory.root = {str(course)!r}\n")
    env = dict(os.environ, PATH=f"{nbgrader.parent}{os.pathsep}{os.environ.get('PATH', '')}")  # it runs alembic
    proc = subprocess.run([str(nbgrader), "generate_assignment", "ikd", "--force"], cwd=course, env=env,
                          capture_output=True, text=True, timeout=240)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    release = course / "release" / "ikd"
    assert sorted(p.name for p in release.glob("*.ipynb")) == sorted(p.name for p in SOURCES)
    for path in SOURCES:
        released = nbformat.read(release / path.name, as_version=4)
        text = "\n".join(c.source for c in released.cells)
        assert BEGIN not in text and ("raise NotImplementedError()" in text or TEXT_STUB in text), path.name
        source_nb = nbformat.read(path, as_version=4)
        assert HIDDEN_BEGIN not in text, f"{path.name}: a hidden test in nbgrader's release"
        assert not any(c.get("outputs") for c in released.cells), f"{path.name}: outputs in nbgrader's release"
        for cell in source_nb.cells:
            for line in _solution_lines(cell) + _hidden_lines(cell):
                assert line not in text, f"{path.name}: solution or hidden-test line {line!r} in nbgrader's release"
        assert _check_cell_ids(released) == _check_cell_ids(source_nb)


# ------------------------------------------------------------------------------------------ (c)
def _through_last_check(nb):
    """The notebook up to and including its last check cell (the exercises come before the training)."""
    last = max(i for i, c in enumerate(nb.cells) if _grader(c).get("grade") and c.cell_type == "code")
    nb.cells = nb.cells[: last + 1]
    return nb


def _error_text(cell) -> str:
    return "\n".join(f"{o.get('ename')}: {o.get('evalue')}" for o in cell.get("outputs", [])
                     if o.get("output_type") == "error")


def _stream_text(cell) -> str:
    return "".join(o.get("text", "") for o in cell.get("outputs", []) if o.get("output_type") == "stream")


CODE_SOURCES = [p for p in SOURCES if p.name[:2] in EXPECTED]


@pytest.mark.parametrize("name", [p.name for p in CODE_SOURCES], ids=[p.stem for p in CODE_SOURCES])
def test_student_version_checks_say_not_written_yet(name, student_dir, course_env, tmp_path):
    nb = _through_last_check(nbformat.read(student_dir / name, as_version=4))
    path = tmp_path / name
    nbformat.write(nb, path)
    executed, _ = execute(path, course_env, allow_errors=True)
    checks = _code_checks(executed)
    assert checks
    for cell in checks:
        error = _error_text(cell)
        assert "AssertionError" in error and exercises.NOT_WRITTEN in error, (_grader(cell)["grade_id"], error)
        assert "✓" not in _stream_text(cell)
    others = [(i, _error_text(c)) for i, c in enumerate(executed.cells)
              if c.cell_type == "code" and not _grader(c).get("grade") and _error_text(c)]
    assert not others, f"{name}: cells other than the checks failed: {others}"


def test_solutions_pass_their_checks_and_a_wrong_answer_is_diagnosed(course_env, tmp_path):
    """The instructor's exercise cells, all in one kernel; then a typical wrong answer to notebook 03's exercise."""
    cells = []
    for path in SOURCES:
        cells += [c for c in nbformat.read(path, as_version=4).cells if _grader(c) and c.cell_type == "code"]
    wrong = nbformat.v4.new_code_cell(
        "def logit_kd(student_hm, teacher_hm, target, target_weight, alpha):\n"
        "    w = target_weight[:, :, None, None]\n"
        "    return (1 - alpha) * 0.5 * ((w * (student_hm - target)) ** 2).mean() + "
        "alpha * 0.5 * ((student_hm - teacher_hm) ** 2).mean()\n\n"
        "from ikd_edu.exercises import check_logit_kd\n"
        "check_logit_kd(logit_kd)\n")
    nb = nbformat.v4.new_notebook(cells=cells + [wrong], metadata={"kernelspec": {
        "display_name": "Python 3", "language": "python", "name": "python3"}})
    path = tmp_path / "solutions.ipynb"
    nbformat.write(nb, path)
    executed, _ = execute(path, course_env, allow_errors=True)
    checks = _code_checks(executed)
    assert len(checks) >= len(EXPECTED)
    for cell in checks:
        assert not _error_text(cell), (_grader(cell)["grade_id"], _error_text(cell))
        assert _stream_text(cell).startswith("✓ ") and "matches ikd_edu." in _stream_text(cell)
        seconds = cell_seconds(cell)
        assert seconds < CELL_TIMEOUT_S, f"{_grader(cell)['grade_id']} took {seconds:.1f} s (nbgrader's timeout: 30 s)"
    diagnosis = _error_text(executed.cells[-1])
    assert "gradient reaches the teacher" in diagnosis and "tensor(" not in diagnosis, diagnosis
