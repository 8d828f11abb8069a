"""Write the README's quickstart table from a quickstart's ``summary.json`` (never copied by hand).

    python scripts/make_readme_tables.py [--summary runs/quickstart/summary.json] [--readme README.md] [--check]

Replaces what lies between ``<!-- quickstart-table:begin -->`` and ``<!-- quickstart-table:end -->``
with: AP x 100 per seed, mean and std per variant, then every variant's difference from the
labels-only student (and IKD's from the equal-time student) with its verdict
(:func:`ikd_edu.train.quickstart.verdict`). ``--check`` only says whether the README is current.
"""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from ikd_edu.train.quickstart import ROW_ORDER, verdict_rows  # noqa: E402

BEGIN, END = "<!-- quickstart-table:begin -->", "<!-- quickstart-table:end -->"
LABELS = {
    "teacher": "teacher (released, 8,000 labelled images)",
    "student-labels": "student-labels (500 images)",
    "student-labels-equal-time": "student-labels-equal-time",
    "student-logit": "student-logit",
    "student-feature": "student-feature",
    "student-structure": "student-structure",
    "student-ikd": "**student-ikd** (all three)",
}


def quickstart_table(summary: dict) -> str:
    seeds = [str(s) for s in summary["seeds"]]
    by = {r["name"]: r for r in summary["rows"]}
    head = "| variant | " + " | ".join(f"seed {s}" for s in seeds) + " | mean | std |"
    lines = [head, "|---" * (len(seeds) + 3) + "|"]
    for name in ROW_ORDER:
        if name not in by:
            continue
        r = by[name]
        per = " | ".join("-" if r["AP_per_seed"].get(s) is None else f"{100 * r['AP_per_seed'][s]:.1f}" for s in seeds)
        std = f"{100 * r['AP_std']:.1f}" if r["n"] > 1 else "-"
        lines.append(f"| {LABELS[name]} | {per} | {100 * r['AP_mean']:.1f} | {std} |")
    lines += ["", "| comparison (mean over seeds) | difference | seed-to-seed std (larger of the two) | verdict |",
              "|---|---|---|---|"]
    for v in verdict_rows(summary["rows"]):
        lines.append(f"| {v['name']} vs {v['baseline']} | {v['diff']:+.1f} AP | {v['spread']:.1f} | {v['verdict']} |")
    eq = summary.get("equal_time") or {}
    if eq:
        lines += ["", f"Equal time (last seed run): the IKD student trained {eq['ikd_train_s']:.0f} s for "
                      f"{eq['ikd_steps']} steps (teacher cache {eq['ikd_teacher_cache_s']:.0f} s included); a labels-only "
                      f"step took {1000 * eq['labels_step_s']:.0f} ms, so `student-labels-equal-time` got {eq['steps']} steps."]
    lines += ["", "Verdicts: *helps* if the difference exceeds twice the larger seed-to-seed std, *hurts* if below minus "
                  "twice, *no effect* within one std, else *inconclusive*."]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--summary", default=str(REPO / "runs" / "quickstart" / "summary.json"))
    parser.add_argument("--readme", default=str(REPO / "README.md"))
    parser.add_argument("--check", action="store_true", help="exit 1 if the README's table is not the generated one")
    args = parser.parse_args(argv)
    summary = json.loads(Path(args.summary).read_text())
    readme = Path(args.readme)
    text = readme.read_text()
    if BEGIN not in text or END not in text:
        print(f"{readme}: no {BEGIN} ... {END} block", file=sys.stderr)
        return 2
    head, rest = text.split(BEGIN, 1)
    _, tail = rest.split(END, 1)
    new = f"{head}{BEGIN}\n{quickstart_table(summary)}\n{END}{tail}"
    if args.check:
        print("README table is current" if new == text else "README table differs from summary.json")
        return 0 if new == text else 1
    readme.write_text(new)
    print(f"wrote the quickstart table of {args.summary} ({len(summary['seeds'])} seeds) into {readme}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
