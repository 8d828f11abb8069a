"""``ikd-edu`` command line: thin on purpose — parse, call the library, print.

Each subcommand lives next to the code it drives: the module named in ``COMMANDS`` exposes
``add_cli_arguments(parser)`` and ``cli_main(args) -> int`` (``args._command`` holds the
command words, for modules that serve several commands). Modules are imported only
when their command runs, so ``ikd-edu --help`` stays fast.

Bad input never ends in a Python traceback: library code raises :class:`UserError`
(or ``FileNotFoundError``/``ValueError`` with a message that says what to do), and the
CLI prints ``ikd-edu: error: <message>`` (one line, from
:func:`ikd_edu.errors.user_message`) and exits with status 2. Anything else is a bug:
``ikd-edu: internal error: ...`` and status 1. ``IKD_DEBUG=1`` prints the traceback too.
"""
from __future__ import annotations

import argparse
import importlib
import sys

from ikd_edu.errors import UserError, debug_enabled, one_line, user_message

# command words -> (module, one-line help)
COMMANDS: dict[tuple[str, ...], tuple[str, str]] = {
    ("data", "synth"): ("ikd_edu.data.synthetic", "generate the synthetic multi-person dataset"),
    ("data", "check"): ("ikd_edu.data.check", "validate a COCO keypoint annotation file"),
    ("eval",): ("ikd_edu.evaluate", "COCO keypoint AP (pycocotools) or MPII PCKh of a results file"),
    ("profile",): ("ikd_edu.profile", "params, true MACs and latency of models"),
    ("train", "teacher"): ("ikd_edu.train.commands", "train a teacher on ground truth"),
    ("train", "student"): ("ikd_edu.train.commands", "train a student, optionally distilled"),
    ("ablation",): ("ikd_edu.apps.ablation", "every distillation variant of a preset over seeds"),
    ("quickstart",): ("ikd_edu.apps.quickstart", "synthetic data -> teacher -> students -> AP table"),
    ("app",): ("ikd_edu.browse", "browse data and predictions in the FiftyOne App (127.0.0.1)"),
    ("assignments", "build"): ("ikd_edu.assignments", "student versions of the assignment notebooks (nbgrader)"),
    ("assignments", "nbgrader"): ("ikd_edu.assignments", "run nbgrader (generate_assignment, autograde ...) with "
                                                          "this environment's commands on PATH"),
}


def build_parser(only_module: str | None = None) -> argparse.ArgumentParser:
    """The full parser; with ``only_module`` only that command's module is imported."""
    from ikd_edu import __version__

    parser = argparse.ArgumentParser(
        prog="ikd-edu",
        description="Integral Knowledge Distillation for pose estimation, as a course.",
    )
    parser.add_argument("--version", action="version", version=f"ikd-edu {__version__}")
    top = parser.add_subparsers(dest="command", metavar="COMMAND")
    groups: dict[str, argparse._SubParsersAction] = {}
    for words, (module_name, help_text) in COMMANDS.items():
        if len(words) == 1:
            sub = top.add_parser(words[0], help=help_text, description=help_text)
        else:
            if words[0] not in groups:
                g = top.add_parser(words[0], help=f"{words[0]} subcommands")
                groups[words[0]] = g.add_subparsers(dest="subcommand", metavar="SUBCOMMAND")
            sub = groups[words[0]].add_parser(words[1], help=help_text, description=help_text)
        sub.set_defaults(_module=module_name, _command=words)
        if only_module in (None, module_name):
            importlib.import_module(module_name).add_cli_arguments(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    # Import only the module of the command being run (fast start, fast --help).
    wanted = next((m for words, (m, _) in COMMANDS.items() if tuple(argv[: len(words)]) == words), "")
    try:
        parser = build_parser(only_module=wanted)
        args = parser.parse_args(argv)
        if getattr(args, "_module", None) is None:
            parser.print_help()
            return 0 if not argv else 2
        validate_args(args)
        return int(importlib.import_module(args._module).cli_main(args) or 0)
    except KeyboardInterrupt:
        print("ikd-edu: interrupted", file=sys.stderr)
        return 130
    except Exception as exc:  # noqa: BLE001 - the one place that turns failures into a line
        message = user_message(exc)
        if debug_enabled():
            import traceback

            traceback.print_exc()
        if message is not None:
            print(f"ikd-edu: error: {message}", file=sys.stderr)
            return 2
        print(f"ikd-edu: internal error: {type(exc).__name__}: {one_line(exc, 300)} "
              "(a bug in ikd-edu: rerun with IKD_DEBUG=1 for the traceback and report it)", file=sys.stderr)
        return 1


def validate_args(args: argparse.Namespace) -> None:
    """Argument checks shared by commands, before any work starts (one-line UserErrors)."""
    from ikd_edu import validate

    if getattr(args, "_command", None) == ("app",):
        size = validate.parse_size(args.input, "--input")
        validate.input_size(size, "--input")
        if args.heatmap_joint is not None:
            validate.joint_index(args.heatmap_joint, validate.num_joints_of(args.data, args.split), "--heatmap-joint")


if __name__ == "__main__":
    sys.exit(main())
