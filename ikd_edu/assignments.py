"""Student versions of the course's assignment notebooks: ``ikd-edu assignments build --out DIR``.

An *assignment notebook* is a course notebook with nbgrader solution cells (cell metadata
``nbgrader.solution = true``; notebooks 01 and 03-06). The instructor's version, in
``notebooks/``, holds the solutions between ``### BEGIN SOLUTION`` / ``### END SOLUTION``;
the student version is made with **nbgrader's own preprocessors**, run through nbconvert, in
the order ``nbgrader generate_assignment`` uses them (minus the gradebook database):

===========================  ==================================================================
``CheckCellMetadata``        refuse notebooks whose nbgrader metadata is inconsistent
``LockCells``                check cells (and read-only cells) can't be deleted or edited
``ClearSolutions``           every solution region -> ``# YOUR CODE HERE`` / ``raise NotImplementedError()``
``ClearOutput``              no outputs (nothing of the solution's results leaks)
``ClearHiddenTests``         ``### BEGIN HIDDEN TESTS`` regions removed (each check cell has one: hand-computed cases)
``ClearMarkScheme``          ``=== BEGIN MARK SCHEME ===`` regions removed (none in this course)
``ComputeChecksums``         checksums of the graded cells, as nbgrader's release has them
===========================  ==================================================================

Notebooks without solution cells are not assignments and are left out (they need no
student version). Every file is written atomically (temp file + rename), readable by all
(``0644`` under the usual umask). See ``docs/INSTRUCTORS.md`` for the whole workflow,
including nbgrader's own ``generate_assignment`` / ``autograde`` on the source notebooks.

**nbgrader itself** (``ikd-edu assignments nbgrader ARGS...``): nbgrader's gradebook shells
out to the ``alembic`` command, which lives next to the Python interpreter (``.venv/bin``)
and is not found unless that folder is on ``PATH`` (an activated environment). The wrapper
runs ``python -m nbgrader ARGS...`` with this interpreter's folder first on ``PATH``
(:func:`nbgrader_env`), so ``ikd-edu assignments nbgrader generate_assignment ikd`` works
in a course folder without activating anything.
"""
from __future__ import annotations

import argparse
import os
import subprocess
import sys
from pathlib import Path

from ikd_edu.errors import UserError

__all__ = ["is_assignment", "find_assignments", "student_version", "build", "nbgrader_env", "run_nbgrader",
           "add_cli_arguments", "cli_main", "STUB"]

#: what a solution region becomes (nbgrader's ClearSolutions default for Python)
STUB = "raise NotImplementedError()"


def _read(path: Path):
    import nbformat

    try:
        return nbformat.read(path, as_version=4)
    except Exception as exc:  # nbformat raises several types for a broken file
        raise UserError(f"{path} is not a readable Jupyter notebook ({type(exc).__name__}: {exc}); "
                        "fix or remove it") from None


def is_assignment(nb) -> bool:
    """True when the notebook has at least one nbgrader solution cell."""
    return any(cell.get("metadata", {}).get("nbgrader", {}).get("solution", False) for cell in nb.cells)


def find_assignments(folder: str | Path) -> list[Path]:
    """The ``*.ipynb`` files in ``folder`` (not recursive) that have nbgrader solution cells, sorted.

    Raises :class:`UserError` when the folder is missing, holds no notebook, or none with
    solution cells.
    """
    folder = Path(folder)
    if not folder.is_dir():
        raise UserError(f"notebook folder {folder} does not exist; pass --notebooks DIR, the folder that holds the "
                        "course's .ipynb files (notebooks/ in the ikd-edu checkout)")
    notebooks = sorted(p for p in folder.glob("*.ipynb") if not p.name.startswith("."))
    if not notebooks:
        raise UserError(f"{folder} holds no .ipynb notebooks; pass --notebooks DIR, the folder with the course's "
                        "notebooks (notebooks/ in the ikd-edu checkout)")
    found = [p for p in notebooks if is_assignment(_read(p))]
    if not found:
        raise UserError(f"none of the {len(notebooks)} notebooks in {folder} has nbgrader solution cells (cell "
                        "metadata nbgrader.solution = true), so there is nothing to make a student version of")
    return found


def _exporter():
    from nbconvert.exporters import NotebookExporter
    from nbgrader.preprocessors import (
        CheckCellMetadata,
        ClearHiddenTests,
        ClearMarkScheme,
        ClearOutput,
        ClearSolutions,
        ComputeChecksums,
        LockCells,
    )

    exporter = NotebookExporter()
    for preprocessor in (CheckCellMetadata, LockCells, ClearSolutions, ClearOutput, ClearHiddenTests,
                         ClearMarkScheme, ComputeChecksums):
        exporter.register_preprocessor(preprocessor(), enabled=True)
    return exporter


def student_version(path: str | Path) -> str:
    """The student version of one assignment notebook, as notebook JSON text."""
    import nbformat

    path = Path(path)
    nb = _read(path)
    if not is_assignment(nb):
        raise UserError(f"{path} has no nbgrader solution cells: it is not an assignment notebook")
    try:
        body, _ = _exporter().from_notebook_node(nb, resources={"metadata": {"path": str(path.parent)},
                                                                "unique_key": path.stem})
    except Exception as exc:  # nbgrader's ValidationError / RuntimeError for malformed solution regions
        raise UserError(f"{path}: nbgrader could not make the student version ({type(exc).__name__}: {exc}); "
                        "check that every ### BEGIN SOLUTION has its ### END SOLUTION inside a cell whose "
                        "metadata marks it as a solution cell") from None
    nbformat.validate(nbformat.reads(body, as_version=4))
    return body


def build(out: str | Path, notebooks: str | Path = "notebooks") -> list[Path]:
    """Write the student version of every assignment notebook in ``notebooks`` to ``out``; return the paths."""
    from ikd_edu.io import atomic_write

    sources = find_assignments(notebooks)
    out = Path(out)
    if out.resolve() == Path(notebooks).resolve():
        raise UserError(f"--out {out} is the notebook folder itself: that would overwrite the instructor's "
                        "solutions; choose another folder")
    from ikd_edu.io import check_output_dir

    check_output_dir(out, what="--out folder")  # a file, read-only or full: said before any work
    versions = {src: student_version(src) for src in sources}  # all made before anything is written
    out.mkdir(parents=True, exist_ok=True)
    written = []
    for src, body in versions.items():
        dest = out / src.name
        with atomic_write(dest) as fh:
            fh.write(body)  # atomic_write creates 0666 & ~umask (0644): hand-outs are readable
        written.append(dest)
    return written


def _short_tracebacks_class():
    from nbconvert.preprocessors import Preprocessor
    from traitlets import Bool

    class ShortTracebacks(Preprocessor):
        """Feedback preprocessor: every error output keeps ``ename: evalue``, not the source lines around it.

        IPython's traceback prints the lines around the failing one, and in a check cell those
        include the instructor's ``### BEGIN HIDDEN TESTS`` region (expected values and all),
        even when ``ClearHiddenTests`` has removed it from the cell's source. The checks' own
        messages say what is wrong, so nothing a student needs is lost.
        """

        enabled = Bool(True, help="on as soon as it is listed (nbconvert's preprocessors default to off)").tag(
            config=True)

        def preprocess_cell(self, cell, resources, index):
            for output in cell.get("outputs", []) if cell.cell_type == "code" else []:
                if output.get("output_type") == "error":
                    output["traceback"] = [f"{output.get('ename', 'Error')}: {output.get('evalue', '')}"]
            return cell, resources

    return ShortTracebacks


def __getattr__(name: str):
    """``ikd_edu.assignments.ShortTracebacks`` is made on first use (nbconvert is imported only then)."""
    if name == "ShortTracebacks":
        cls = _short_tracebacks_class()
        cls.__module__ = __name__
        globals()[name] = cls
        return cls
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def nbgrader_env(env: dict | None = None) -> dict:
    """A copy of ``env`` (default ``os.environ``) with this interpreter's folder first on ``PATH``.

    nbgrader runs ``alembic`` as a command when it creates a gradebook; in a virtual
    environment that command sits next to ``sys.executable`` and is missing from ``PATH``
    unless the environment was activated.
    """
    env = dict(os.environ if env is None else env)
    bin_dir = os.path.dirname(os.path.abspath(sys.executable))
    parts = [p for p in env.get("PATH", "").split(os.pathsep) if p]
    env["PATH"] = os.pathsep.join([bin_dir] + [p for p in parts if os.path.abspath(p) != bin_dir])
    return env


def run_nbgrader(args: list[str], cwd: str | Path | None = None, env: dict | None = None, **kwargs):
    """``python -m nbgrader ARGS`` with :func:`nbgrader_env`; returns the ``subprocess.CompletedProcess``.

    ``kwargs`` go to :func:`subprocess.run` (``capture_output=True, text=True`` for a test).
    """
    try:
        import nbgrader  # noqa: F401
    except ImportError:
        raise UserError("nbgrader is not installed in this environment: pip install -e '.[course]' "
                        "(or pip install nbgrader)") from None
    return subprocess.run([sys.executable, "-m", "nbgrader", *args], cwd=cwd, env=nbgrader_env(env), check=False,
                          **kwargs)


def _default_notebooks() -> Path:
    here = Path("notebooks")
    if here.is_dir():
        return here
    from ikd_edu.course import repo_root

    root = repo_root()
    return root / "notebooks" if root is not None else here


def add_cli_arguments(parser: argparse.ArgumentParser) -> None:
    if parser.prog.split()[-1] == "nbgrader":  # ikd-edu assignments nbgrader ARGS...
        parser.add_argument("nbgrader_args", nargs=argparse.REMAINDER, metavar="ARGS",
                            help="nbgrader's own arguments, e.g. generate_assignment ikd, autograde ikd --create")
        return
    parser.add_argument("--out", required=True, help="folder for the student versions (created if needed)")
    parser.add_argument("--notebooks", default=None,
                        help="folder with the instructor's notebooks (default: ./notebooks, else the checkout's)")


def cli_main(args: argparse.Namespace) -> int:
    if tuple(args._command) == ("assignments", "nbgrader"):
        nbgrader_args = [a for a in args.nbgrader_args if a != "--"] or ["--help"]
        return run_nbgrader(nbgrader_args).returncode
    notebooks = Path(args.notebooks) if args.notebooks else _default_notebooks()
    written = build(args.out, notebooks)
    for path in written:
        print(f"wrote {path}")
    print(f"{len(written)} student notebook(s) in {args.out}: solutions replaced by `{STUB}`, outputs cleared, "
          "hidden tests removed, check cells locked")
    return 0
