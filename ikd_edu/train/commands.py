"""``ikd-edu train teacher`` and ``ikd-edu train student`` (``ikd-edu ablation``: :mod:`ikd_edu.apps.ablation`).

Thin on purpose: parse the words into a :class:`~ikd_edu.train.config.Config` with
:func:`~ikd_edu.train.config.load_config`, call :func:`~ikd_edu.train.engine.train`, print.

Examples::

    ikd-edu train teacher --preset quick
    ikd-edu train student --preset quick                              # labels only
    ikd-edu train student --preset quick --distill logit,feature,structure
    ikd-edu train student --preset quick --distill feature --set distill.feature_weight=1e-2
    torchrun --nproc_per_node=4 -m ikd_edu.cli train teacher --preset coco-r50-256x192
"""
from __future__ import annotations

import argparse

from ikd_edu.distill import registry


# --------------------------------------------------------------------------------------
# CLI
# --------------------------------------------------------------------------------------
def add_common_arguments(parser: argparse.ArgumentParser) -> None:
    """``--preset``, ``--set``, ``--teacher-ckpt``, ``--print-config``: shared with ``ikd-edu ablation``."""
    parser.add_argument("--preset", default="quick",
                        help="bundled preset (quick, coco-r50-256x192, mpii-r50-256x256) or a YAML file [quick]")
    parser.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                        help="change one config field, e.g. --set optim.lr=1e-3 (repeatable)")
    parser.add_argument("--teacher-ckpt", default=None, metavar="PATH",
                        help="teacher weights for distillation [runs/<preset>/teacher/best.pt]")
    parser.add_argument("--print-config", action="store_true", help="print the resolved config and exit")


def add_cli_arguments(parser: argparse.ArgumentParser) -> None:
    words = tuple(parser.get_default("_command") or ())
    add_common_arguments(parser)
    parser.add_argument("--out", default=None, metavar="DIR", help="run folder [runs/<preset>/<variant>]")
    parser.add_argument("--seed", type=int, default=None, help="run seed (run.seed)")
    parser.add_argument("--resume", nargs="?", const="auto", default=None, metavar="PATH",
                        help="continue from PATH or <out>/last.pt (the default when it exists)")
    parser.add_argument("--fresh", action="store_true", help="ignore an existing last.pt and start over")
    if words == ("train", "student"):
        parser.add_argument("--distill", default="none", metavar="TERMS",
                            help=f"distillation terms: any of {','.join(registry.user_terms())}, 'all', or none [none]")


def _overrides(args: argparse.Namespace) -> list[str]:
    extra = []
    if getattr(args, "teacher_ckpt", None):
        extra.append(f"model.teacher_checkpoint={args.teacher_ckpt}")
    if getattr(args, "out", None):
        extra.append(f"run.out_dir={args.out}")
    if getattr(args, "seed", None) is not None:
        extra.append(f"run.seed={args.seed}")
    if getattr(args, "resume", None):
        extra.append(f"run.resume={args.resume}")
    if getattr(args, "fresh", False):
        extra.append("run.resume=off")
    if getattr(args, "distill", None) is not None:
        extra.append(f"distill.terms={args.distill}")
    return extra + list(args.overrides)


def cli_main(args: argparse.Namespace) -> int:
    from ikd_edu.train.config import format_config, load_config

    words = tuple(args._command)
    role = "teacher" if words == ("train", "teacher") else "student"
    cfg = load_config(args.preset, _overrides(args), role=role, check_files=not args.print_config)
    if args.print_config:
        print(format_config(cfg), end="")
        return 0
    from ikd_edu.train.engine import train

    summary = train(cfg)
    best = summary["best"]
    from ikd_edu.train.distributed import dist_env

    if dist_env().is_main:
        print(f"{summary['variant']}: best {best['metric']} {best['value']:.4f} (step {best['step']}); "
              f"checkpoint {summary['paths']['best']}")
    return 0
