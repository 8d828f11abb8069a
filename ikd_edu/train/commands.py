"""``ikd-edu train teacher``, ``ikd-edu train student`` and ``ikd-edu ablation``.

Thin on purpose: parse the words into a :class:`~ikd_edu.train.config.Config` with
:func:`~ikd_edu.train.config.load_config`, call :func:`~ikd_edu.train.engine.train`, print.

Examples::

    ikd-edu train teacher --preset quick
    ikd-edu train student --preset quick                              # labels only
    ikd-edu train student --preset quick --distill logit,feature,structure
    ikd-edu train student --preset quick --distill feature --set distill.feature_weight=1e-2
    torchrun --nproc_per_node=4 -m ikd_edu.cli train teacher --preset coco-r50-256x192
    ikd-edu ablation --preset quick --seeds 3

The ablation trains every variant (labels only, + logit, + feature, + structure, + all
three = IKD) for each seed with the same budget and writes ``ablation.{json,csv,md,png}``.
How a variant is judged against labels-only (:func:`verdict`), with ``d`` the difference of
the seed means and ``s = sqrt(std_variant^2 + std_labels^2)`` (sample std over seeds, i.e.
the spread of the difference between two single runs):

* fewer than 2 seeds -> ``inconclusive`` (no spread to compare with);
* ``d > s`` -> ``helps``; ``d < -s`` -> ``hurts``;
* otherwise ``no measurable effect`` when the runs were precise enough to see an effect
  of ``min_effect`` (``s <= min_effect``, default 1 AP point), else ``inconclusive``.

This is a rule of thumb for a course, not a significance test: with 3 seeds, ``d > s`` is
roughly a one-sided p < 0.1 for equal spreads. Use more seeds for a firmer answer.
"""
from __future__ import annotations

import argparse
import math
from pathlib import Path

from ikd_edu.distill import registry
from ikd_edu.errors import UserError

#: ablation variants: name -> distillation terms (each registered term alone, then all of them:
#: ikd_edu/distill/registry.py)
VARIANTS: dict[str, list[str]] = {
    "labels": [],
    **{t: [t] for t in registry.variant_terms()},
    "ikd": list(registry.user_terms()),
}


# --------------------------------------------------------------------------------------
# CLI
# --------------------------------------------------------------------------------------
def add_cli_arguments(parser: argparse.ArgumentParser) -> None:
    words = tuple(parser.get_default("_command") or ())
    parser.add_argument("--preset", default="quick",
                        help="bundled preset (quick, coco-r50-256x192, mpii-r50-256x256) or a YAML file [quick]")
    parser.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                        help="change one config field, e.g. --set optim.lr=1e-3 (repeatable)")
    parser.add_argument("--teacher-ckpt", default=None, metavar="PATH",
                        help="teacher weights for distillation [runs/<preset>/teacher/best.pt]")
    parser.add_argument("--print-config", action="store_true", help="print the resolved config and exit")
    if words == ("ablation",):
        parser.add_argument("--seeds", type=int, default=3, help="seeds per variant [3]")
        parser.add_argument("--variants", default=",".join(VARIANTS),
                            help=f"comma-separated subset of {', '.join(VARIANTS)} [all]")
        parser.add_argument("--out", default=None, metavar="DIR", help="ablation folder [runs/<preset>/ablation]")
        parser.add_argument("--train-teacher", action="store_true",
                            help="train the teacher first if its checkpoint is missing")
        parser.add_argument("--min-effect", type=float, default=0.01,
                            help="smallest AP difference worth detecting, for the verdict [0.01 = 1 point]")
        return
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
    if getattr(args, "out", None) and getattr(args, "_command", ()) != ("ablation",):
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
    if words == ("ablation",):
        return _ablation_cli(args)
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


# --------------------------------------------------------------------------------------
# Ablation
# --------------------------------------------------------------------------------------
def verdict(variant: list[float], labels: list[float], min_effect: float = 0.01) -> str:
    """``helps`` / ``hurts`` / ``no measurable effect`` / ``inconclusive`` (rule in the module docstring)."""
    if len(variant) < 2 or len(labels) < 2:
        return "inconclusive"
    d = _mean(variant) - _mean(labels)
    s = math.sqrt(_std(variant) ** 2 + _std(labels) ** 2)
    if d > s:
        return "helps"
    if d < -s:
        return "hurts"
    return "no measurable effect" if s <= min_effect else "inconclusive"


def _mean(xs: list[float]) -> float:
    return sum(xs) / len(xs)


def _std(xs: list[float]) -> float:
    """Sample standard deviation (ddof = 1); 0 for a single value."""
    if len(xs) < 2:
        return 0.0
    m = _mean(xs)
    return math.sqrt(sum((x - m) ** 2 for x in xs) / (len(xs) - 1))


def summarize_ablation(values: dict[str, list[float]], metric: str = "AP", min_effect: float = 0.01) -> list[dict]:
    """One row per variant: mean, std, per-seed values, difference to labels-only and the verdict."""
    labels = values.get("labels")
    rows = []
    for name, xs in values.items():
        row = {"variant": name, "terms": "+".join(VARIANTS.get(name, [])) or "none", "metric": metric,
               "seeds": len(xs), "mean": _mean(xs), "std": _std(xs), "values": list(xs)}
        if labels and name != "labels":
            row["diff_vs_labels"] = _mean(xs) - _mean(labels)
            row["noise"] = math.sqrt(_std(xs) ** 2 + _std(labels) ** 2)
            row["verdict"] = verdict(xs, labels, min_effect)
        else:
            row["diff_vs_labels"], row["noise"], row["verdict"] = 0.0, 0.0, "baseline" if name == "labels" else ""
        rows.append(row)
    return rows


def write_ablation_report(rows: list[dict], out_dir: Path, title: str = "") -> dict[str, str]:
    """``ablation.json``, ``ablation.csv``, ``ablation.md`` and a bar chart ``ablation.png`` (x100 for AP)."""
    import csv
    import io

    from ikd_edu.io import atomic_write, write_json

    out_dir.mkdir(parents=True, exist_ok=True)
    scale = 100.0 if rows and rows[0]["metric"] == "AP" else 1.0
    write_json(out_dir / "ablation.json", {"title": title, "rows": rows})
    buf = io.StringIO()
    w = csv.writer(buf)
    w.writerow(["variant", "terms", "seeds", "mean", "std", "diff_vs_labels", "noise", "verdict", "values"])
    for r in rows:
        w.writerow([r["variant"], r["terms"], r["seeds"], f"{r['mean']:.6f}", f"{r['std']:.6f}",
                    f"{r['diff_vs_labels']:.6f}", f"{r['noise']:.6f}", r["verdict"],
                    " ".join(f"{v:.6f}" for v in r["values"])])
    with atomic_write(out_dir / "ablation.csv") as fh:
        fh.write(buf.getvalue())
    unit = f"{rows[0]['metric']} x100" if scale == 100 else (rows[0]["metric"] if rows else "")
    lines = [f"# Ablation{': ' + title if title else ''}", "",
             f"| variant | terms | seeds | {unit} mean ± std | diff vs labels | verdict |",
             "|---|---|---|---|---|---|"]
    for r in rows:
        diff = "" if r["variant"] == "labels" else f"{scale * r['diff_vs_labels']:+.1f} (noise {scale * r['noise']:.1f})"
        lines.append(f"| {r['variant']} | {r['terms']} | {r['seeds']} | {scale * r['mean']:.1f} ± {scale * r['std']:.1f} "
                     f"| {diff} | {r['verdict']} |")
    lines += ["", "Verdict rule: d = mean difference to labels-only, s = sqrt(std_variant² + std_labels²) "
              "(sample std over seeds); helps if d > s, hurts if d < -s, otherwise no measurable effect when "
              "s <= the minimum effect, else inconclusive (also with fewer than 2 seeds)."]
    with atomic_write(out_dir / "ablation.md") as fh:
        fh.write("\n".join(lines) + "\n")
    paths = {"json": str(out_dir / "ablation.json"), "csv": str(out_dir / "ablation.csv"),
             "md": str(out_dir / "ablation.md")}
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt

        fig, ax = plt.subplots(figsize=(1.4 * max(len(rows), 2) + 1, 3.2))
        names = [r["variant"] for r in rows]
        ax.bar(names, [scale * r["mean"] for r in rows], yerr=[scale * r["std"] for r in rows], capsize=4,
               color=["0.6" if n == "labels" else "tab:blue" for n in names])
        for i, r in enumerate(rows):
            ax.scatter([i] * len(r["values"]), [scale * v for v in r["values"]], color="k", s=8, zorder=3)
        ax.set_ylabel(unit)
        ax.set_title(title or "ablation (mean ± std over seeds)")
        fig.tight_layout()
        with atomic_write(out_dir / "ablation.png", "wb") as fh:
            fig.savefig(fh, format="png", dpi=120)
        plt.close(fig)
        paths["png"] = str(out_dir / "ablation.png")
    except ImportError:  # matplotlib missing: the table is still written
        pass
    return paths


def run_ablation(preset: str, seeds: int = 3, variants: list[str] | None = None, overrides: list[str] | None = None,
                 out_dir: str | None = None, train_teacher: bool = False, min_effect: float = 0.01) -> dict:
    """Train every variant for seeds ``0..seeds-1`` (same budget) and write the report.

    Finished runs (``summary.json`` present) are reused, interrupted ones resume, so the
    command can be re-run after a crash. Returns ``{"rows": [...], "paths": {...}}``.
    """
    from ikd_edu.io import read_json
    from ikd_edu.train.config import default_out_root, load_config
    from ikd_edu.train.engine import train

    overrides = list(overrides or [])
    variants = variants or list(VARIANTS)
    bad = [v for v in variants if v not in VARIANTS]
    if bad:
        raise UserError(f"--variants: unknown {', '.join(bad)}; choose from {', '.join(VARIANTS)}")
    if seeds < 1:
        raise UserError(f"--seeds must be >= 1, got {seeds}")
    from ikd_edu.io import check_output_dir

    base = load_config(preset, overrides, role="student", check_files=False)
    root = Path(out_dir) if out_dir else default_out_root(base) / "ablation"
    check_output_dir(root, what="ablation folder")  # a file, read-only or full: said before any training
    teacher_ckpt = Path(base.model.teacher_checkpoint)
    if any(VARIANTS[v] for v in variants) and not teacher_ckpt.is_file():
        if not train_teacher:
            load_config(preset, overrides + ["distill.terms=logit"], role="student")  # raises the usual message
        teacher_cfg = load_config(preset, overrides + [f"run.out_dir={teacher_ckpt.parent}"], role="teacher")
        train(teacher_cfg)
    values: dict[str, list[float]] = {}
    metric = "AP"
    for name in variants:
        for seed in range(seeds):
            run_dir = root / name / f"seed{seed}"
            cfg = load_config(preset, overrides + [f"distill.terms={','.join(VARIANTS[name]) or 'none'}",
                                                   f"run.seed={seed}", f"run.out_dir={run_dir}",
                                                   f"model.teacher_checkpoint={teacher_ckpt}"], role="student")
            summary_path = run_dir / "summary.json"
            summary = (read_json(summary_path, "run summary", expect=dict,
                                 fix=f"delete it to redo the run ({run_dir})") if summary_path.is_file() else train(cfg))
            if not isinstance(summary.get("best"), dict) or not isinstance(summary["best"].get("value"), (int, float)):
                raise UserError(f"run summary {summary_path} has no best metric value; delete it to redo the run")
            metric = summary["best"]["metric"]
            values.setdefault(name, []).append(float(summary["best"]["value"]))
            print(f"ablation: {name} seed {seed}: {metric} {summary['best']['value']:.4f}", flush=True)
    rows = summarize_ablation(values, metric, min_effect)
    paths = write_ablation_report(rows, root, title=f"{preset}, {seeds} seed(s)")
    return {"rows": rows, "paths": paths}


def _ablation_cli(args: argparse.Namespace) -> int:
    from ikd_edu.train.config import load_config

    overrides = list(args.overrides)
    if args.teacher_ckpt:
        overrides.append(f"model.teacher_checkpoint={args.teacher_ckpt}")
    if args.print_config:
        from ikd_edu.train.config import format_config

        print(format_config(load_config(args.preset, overrides, role="student", check_files=False)), end="")
        return 0
    variants = [v.strip() for v in args.variants.split(",") if v.strip()]
    result = run_ablation(args.preset, args.seeds, variants, overrides, args.out, args.train_teacher, args.min_effect)
    with open(result["paths"]["md"]) as fh:
        print(fh.read(), end="")
    print("written: " + ", ".join(result["paths"].values()))
    return 0
