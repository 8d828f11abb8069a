"""``ikd-edu ablation``: every distillation variant of a preset over seeds, and its report.

Example::

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


def mean_std(xs) -> tuple[float, float]:
    """Mean and sample standard deviation (ddof = 1; 0 for a single value) of the numbers ``xs``."""
    xs = list(xs)
    mean = sum(xs) / len(xs)
    if len(xs) < 2:
        return mean, 0.0
    return mean, math.sqrt(sum((x - mean) ** 2 for x in xs) / (len(xs) - 1))


def verdict(variant: list[float], labels: list[float], min_effect: float = 0.01) -> str:
    """``helps`` / ``hurts`` / ``no measurable effect`` / ``inconclusive`` (rule in the module docstring)."""
    if len(variant) < 2 or len(labels) < 2:
        return "inconclusive"
    (mv, sv), (ml, sl) = mean_std(variant), mean_std(labels)
    d, s = mv - ml, math.sqrt(sv**2 + sl**2)
    if d > s:
        return "helps"
    if d < -s:
        return "hurts"
    return "no measurable effect" if s <= min_effect else "inconclusive"


def summarize_ablation(values: dict[str, list[float]], metric: str = "AP", min_effect: float = 0.01) -> list[dict]:
    """One row per variant: mean, std, per-seed values, difference to labels-only and the verdict."""
    labels = values.get("labels")
    rows = []
    for name, xs in values.items():
        mean, std = mean_std(xs)
        row = {"variant": name, "terms": "+".join(VARIANTS.get(name, [])) or "none", "metric": metric,
               "seeds": len(xs), "mean": mean, "std": std, "values": list(xs)}
        if labels and name != "labels":
            label_mean, label_std = mean_std(labels)
            row["diff_vs_labels"] = mean - label_mean
            row["noise"] = math.sqrt(std**2 + label_std**2)
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
        from ikd_edu.viz.curves import plot_ablation
    except ImportError:  # matplotlib missing: the table is still written
        return paths
    fig = plot_ablation(rows, metric=rows[0]["metric"] if rows else "AP", scale=scale,
                        title=title or "ablation (mean ± std over seeds)")
    with atomic_write(out_dir / "ablation.png", "wb") as fh:
        fig.savefig(fh, format="png", dpi=120)
    paths["png"] = str(out_dir / "ablation.png")
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
    from ikd_edu.train.caches import CacheStore

    values: dict[str, list[float]] = {}
    metric = "AP"
    caches = CacheStore()  # flip-only runs: every variant and seed reuses the same crops and teacher outputs
    for name in variants:
        for seed in range(seeds):
            run_dir = root / name / f"seed{seed}"
            cfg = load_config(preset, overrides + [f"distill.terms={','.join(VARIANTS[name]) or 'none'}",
                                                   f"run.seed={seed}", f"run.out_dir={run_dir}",
                                                   f"model.teacher_checkpoint={teacher_ckpt}"], role="student")
            summary_path = run_dir / "summary.json"
            summary = (read_json(summary_path, "run summary", expect=dict,
                                 fix=f"delete it to redo the run ({run_dir})") if summary_path.is_file()
                       else train(cfg, caches=caches))
            if not isinstance(summary.get("best"), dict) or not isinstance(summary["best"].get("value"), (int, float)):
                raise UserError(f"run summary {summary_path} has no best metric value; delete it to redo the run")
            metric = summary["best"]["metric"]
            values.setdefault(name, []).append(float(summary["best"]["value"]))
            print(f"ablation: {name} seed {seed}: {metric} {summary['best']['value']:.4f}", flush=True)
    rows = summarize_ablation(values, metric, min_effect)
    paths = write_ablation_report(rows, root, title=f"{preset}, {seeds} seed(s)")
    return {"rows": rows, "paths": paths}


def add_cli_arguments(parser: argparse.ArgumentParser) -> None:
    from ikd_edu.train.commands import add_common_arguments

    add_common_arguments(parser)
    parser.add_argument("--seeds", type=int, default=3, help="seeds per variant [3]")
    parser.add_argument("--variants", default=",".join(VARIANTS),
                        help=f"comma-separated subset of {', '.join(VARIANTS)} [all]")
    parser.add_argument("--out", default=None, metavar="DIR", help="ablation folder [runs/<preset>/ablation]")
    parser.add_argument("--train-teacher", action="store_true",
                        help="train the teacher first if its checkpoint is missing")
    parser.add_argument("--min-effect", type=float, default=0.01,
                        help="smallest AP difference worth detecting, for the verdict [0.01 = 1 point]")


def cli_main(args: argparse.Namespace) -> int:
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
