"""Write the README's result tables from run artifacts (never copied by hand).

    python scripts/make_readme_tables.py [--summary runs/quickstart/summary.json]
                                         [--artifacts test-artifacts] [--readme README.md] [--check]

* between ``<!-- quickstart-table:begin -->`` and ``<!-- quickstart-table:end -->``: from a
  quickstart's ``summary.json``, AP x 100 per seed, mean and std per variant, then every
  variant's difference from the labels-only student (and IKD's from the equal-time student)
  with its verdict (:func:`ikd_edu.apps.quickstart.verdict`);
* between ``<!-- notebook-table:begin -->`` and ``<!-- notebook-table:end -->``: from the
  notebook test's ``notebook-times.json`` and ``notebook-results.json``, each notebook's
  quick-mode time and the distillation results it read out.

A block whose artifact is missing is left as it is. ``--check`` only says whether the README is current.
"""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from ikd_edu.apps.quickstart import ROW_ORDER, verdict_rows  # noqa: E402

BEGIN, END = "<!-- quickstart-table:begin -->", "<!-- quickstart-table:end -->"
NB_BEGIN, NB_END = "<!-- notebook-table:begin -->", "<!-- notebook-table:end -->"
NOTEBOOKS = {
    "00_setup_and_tour.ipynb": "environment check, the synthetic set, crops, target heatmaps",
    "01_heatmaps.ipynb": "encode/decode, quantisation error, quarter offset vs DARK, flip test, OKS and AP; "
                         "**exercise**: the encoder",
    "02_teacher.ipynb": "SimpleBaseline, params/MACs, a short teacher trained here vs the released one, heatmaps, features",
    "03_logit_distillation.ipynb": "FPD logit KD, alpha, temperature; **exercise**: `logit_kd`",
    "04_feature_distillation.ipynb": "adapter, feature L2, PCA of teacher vs adapted student; **exercise**: `feature_kd`",
    "05_structure_distillation.ipynb": "affinity and joint relations, affinity explorer widget; **exercises**: "
                                       "`affinity`, `joint_relations_of`",
    "06_integral_kd.ipynb": "the weighted sum and its decay, five students at one budget, teacher / IKD / labels-only "
                            "side by side, params/MACs/latency, what each term buys",
    "07_explain_with_captum.ipynb": "integrated gradients, Grad-CAM and saliency, teacher vs student",
    "08_browse_with_fiftyone.ipynb": "OKS per person, saved views, FiftyOne App (or a static gallery without MongoDB)",
    "09_capstone.ipynb": "capstone: beat the given student's AP at a fixed step budget by choosing terms and weights, "
                         "reported with `ikd-edu ablation` (the test runs 20 steps, a learner 400)",
}
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
    per_seed = summary.get("equal_time_per_seed") or {}
    if per_seed:
        lines += ["", "Equal time, per seed: the IKD student's training time (teacher cache included) / a labels-only "
                      "step = the equal-time student's steps:",
                  "; ".join(f"seed {s}: {e['ikd_train_s']:.0f} s ({e['ikd_teacher_cache_s']:.0f} s) / "
                            f"{1000 * e['labels_step_s']:.0f} ms = {e['steps']} steps" for s, e in per_seed.items()) + "."]
    elif summary.get("equal_time"):
        eq = summary["equal_time"]
        lines += ["", f"Equal time (last seed run): the IKD student trained {eq['ikd_train_s']:.0f} s for "
                      f"{eq['ikd_steps']} steps (teacher cache {eq['ikd_teacher_cache_s']:.0f} s included); a labels-only "
                      f"step took {1000 * eq['labels_step_s']:.0f} ms, so `student-labels-equal-time` got {eq['steps']} steps."]
    lines += ["", "Verdicts: *helps* if the difference exceeds twice the larger seed-to-seed std, *hurts* if below minus "
                  "twice, *no effect* within one std, else *inconclusive*."]
    return "\n".join(lines)


def notebook_table(times: dict, results: dict) -> str:
    lines = ["| notebook | what it teaches | quick mode, 2 CPU cores | results it read out (one seed) |", "|---|---|---|---|"]
    for name, what in NOTEBOOKS.items():
        t = times.get(name)
        got = "; ".join(f"{e['what']}: {e['ap']} vs {e['base']} ({e['diff']}, {e['verdict']})" for e in results.get(name, []))
        lines.append(f"| `{name[:-6]}` | {what} | {'-' if t is None else f'{t:.1f} s'} | {got} |")
    total = sum(times.get(n, 0.0) for n in NOTEBOOKS)
    lines.append(f"| all {len(NOTEBOOKS)}, in order | `.venv/bin/python -m pytest -q tests/test_notebooks.py` | "
                 f"{total:.0f} s ({int(total // 60)} min {total % 60:.0f} s) | |")
    return "\n".join(lines)


def _replace(text: str, begin: str, end: str, body: str) -> str:
    if begin not in text or end not in text:
        raise SystemExit(f"README: no {begin} ... {end} block")
    head, rest = text.split(begin, 1)
    _, tail = rest.split(end, 1)
    return f"{head}{begin}\n{body}\n{end}{tail}"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--summary", default=str(REPO / "runs" / "quickstart" / "summary.json"))
    parser.add_argument("--artifacts", default=str(REPO / "test-artifacts"))
    parser.add_argument("--readme", default=str(REPO / "README.md"))
    parser.add_argument("--check", action="store_true", help="exit 1 if the README's table is not the generated one")
    args = parser.parse_args(argv)
    readme = Path(args.readme)
    text = new = readme.read_text()
    done = []
    if Path(args.summary).is_file():
        summary = json.loads(Path(args.summary).read_text())
        new = _replace(new, BEGIN, END, quickstart_table(summary))
        done.append(f"quickstart table ({len(summary['seeds'])} seeds)")
    times_file, results_file = Path(args.artifacts) / "notebook-times.json", Path(args.artifacts) / "notebook-results.json"
    if times_file.is_file():
        results = json.loads(results_file.read_text()) if results_file.is_file() else {}
        new = _replace(new, NB_BEGIN, NB_END, notebook_table(json.loads(times_file.read_text()), results))
        done.append("notebook table")
    if args.check:
        print("README table is current" if new == text else "README table differs from summary.json")
        return 0 if new == text else 1
    readme.write_text(new)
    print(f"wrote {', '.join(done) or 'nothing (no artifacts found)'} into {readme}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
