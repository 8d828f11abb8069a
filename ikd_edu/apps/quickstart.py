"""``ikd-edu quickstart``: distillation shown working, end to end, on a CPU in minutes.

    ikd-edu quickstart --out runs/quickstart            # seed 0
    ikd-edu quickstart --out runs/quickstart --seed 1   # same teacher, students of seed 1

Stages (each one reuses what an earlier invocation left in ``--out``: finished runs are
skipped, an interrupted one resumes from its ``last.pt``):

1. **data** - the synthetic stick-figure set (:func:`ikd_edu.data.synthetic.ensure_synthetic`),
   8,000 training / 500 validation images, in ``DIR/data`` (or ``--data``);
2. **teacher** - ``quick-teacher`` (3.85 M params) on *all* 8,000 training images, trained to
   convergence: flip-only augmentation, 6,500 steps, Adam 2e-3 x0.1 at 4,500 and 5,750
   (``TEACHER_RECIPE``). That takes ~30 min on 2 cores, so the package ships the result, as
   a model zoo ships weights (``ikd_edu/weights/quick-teacher.pt`` and its card
   ``quick-teacher.json``, :mod:`ikd_edu.train.released`): it is installed into
   ``DIR/teacher`` when the card's recipe and data sha256 match this run and its AP checks
   out on the validation images; ``--train-teacher`` trains it here from the recipe (AP every
   250 steps) and prints the difference from the card. Later seeds reuse ``DIR/teacher``;
3. **students** - ``quick-student`` (0.57 M params) trained on only **500 labelled images**
   (``data.label_subset``; the same 500 for every variant and seed), every variant with the
   same steps, batch, schedule and flip-only augmentation:
   ``student-labels`` (no teacher), ``student-logit``, ``student-feature``,
   ``student-structure`` (one term each), ``student-ikd`` (all three); then
   ``student-labels-equal-time``: labels only, given the *wall time* the IKD student took
   (its teacher forward passes included), i.e. more steps;
4. **evaluation and report** - COCO keypoint AP / AR (pycocotools) on the 500 validation
   images, params, true MACs, CPU latency, training time; printed, written to
   ``DIR/results.json`` (this seed) and ``DIR/results-seed<S>.json``, and, over every seed
   found in ``DIR``, ``DIR/summary.json``, ``DIR/ablation.png`` (mean +- std per variant)
   and ``DIR/teacher_curves.png`` (the teacher's losses and AP vs step).

Why this setting makes distillation visible: the realistic lever is a teacher trained on
many labels and a student with few. A student with 500 images overfits them; the teacher's
heatmaps and features carry what it learnt from the other 7,500 images.

Speed: the teacher is frozen, so its outputs are computed once for every training crop and
once for its mirror image (``distill.teacher_cache``, see
:class:`ikd_edu.train.caches.TeacherCache`): the exact targets of a forward pass, stored, so a
KD step costs little more than a plain one (figures: benchmarks/README.md).
With flip-only augmentation the students' crops themselves are also cut and encoded once
(``data.cache_crops``, :class:`ikd_edu.train.caches.CropCache`): the same batches, without
re-cutting them on every step.

``--fast`` is a smoke test (tiny data, a few steps, meaningless numbers).
"""
from __future__ import annotations

import argparse
import json
import math
import os
import sys
import time
from pathlib import Path

from ikd_edu.apps.ablation import mean_std
from ikd_edu.distill import registry
from ikd_edu.errors import UserError

#: student variants, in training order: name -> distillation terms (every registered term, and
#: each on its own: ikd_edu/distill/registry.py). The labels-only and IKD students go first,
#: back to back, so the equal-time student can be sized from their timings.
STUDENTS: dict[str, list[str]] = {
    "student-labels": [],
    "student-ikd": list(registry.user_terms()),
    **{f"student-{t}": [t] for t in registry.variant_terms()},
}
EQUAL_TIME = "student-labels-equal-time"
#: table order
ROW_ORDER = ["teacher", "student-labels", EQUAL_TIME, *[f"student-{t}" for t in registry.variant_terms()],
             "student-ikd"]

#: the quickstart setting (the rest comes from the ``quick`` preset)
SETTINGS = {
    "images": 8000,  # synthetic training images (the teacher's labels)
    "val_images": 500,  # synthetic validation images
    "label_subset": 500,  # the students' labelled images
    "student_steps": 800,  # every student variant (equal-time: more, from the measured times)
    "teacher_steps": 6500,  # the teacher's schedule (TEACHER_RECIPE): 11.4 epochs of the 18,327 crops
    "teacher_evals": 26,  # teacher AP every 250 steps: the curve that shows where it stops rising
    "num_workers": 2,
    "max_equal_time_factor": 10,  # safety cap on the equal-time student's steps (x student_steps)
    "image_size": (192, 192),  # synthetic images (H, W)
}
#: ``--fast``: a smoke test of the whole pipeline (seconds; numbers meaningless)
FAST = {
    "images": 24,
    "val_images": 6,
    "label_subset": 8,
    "student_steps": 2,
    "teacher_steps": 4,
    "teacher_evals": 2,
    "batch_size": 4,
    "num_workers": 0,
    "max_equal_time_factor": 2,  # tiny runs: timings are all overhead; don't let them blow up
}
#: the paper's models at the paper's size, for a GPU (``--full`` here, the course's full mode): the
#: SimpleBaseline-R50 teacher and the R18 + 3x64 student, 256x192 crops from synthetic 640x480
#: images (COCO-like), the device input pipeline (nvJPEG decode once per image, batched warp and
#: targets); :func:`paper_model_overrides` turns them into config overrides
PAPER_MODELS = {
    "teacher_model": "simplebaseline-r50",
    "student_model": "student",
    "input_size": (256, 192),
    "image_size": (480, 640),
    "pipeline": "device",
}
#: ``--full``: :data:`PAPER_MODELS`, the teacher trained here (the released teacher is the quick
#: one). Expected on one H100: ~5 min for the whole first run, estimated from the reference
#: figures (teacher ~3,300 img/s, IKD student ~4,800 img/s training), not yet measured
#: (benchmarks/gpu_train.py measures the steps)
FULL = {**PAPER_MODELS, "num_workers": 8}
#: ``--full --fast``: the full-mode settings at a tiny size (the CPU smoke test)
FULL_FAST = {"input_size": (64, 64), "image_size": (96, 128), "num_workers": 0}
#: how the teacher is trained, on top of the ``quick`` preset: flip-only augmentation (as the
#: students), Adam at 2e-3 after a linear warm-up, then x0.1 twice (the reference's step
#: schedule), milestones as fractions of the schedule: 200 / 4,500 / 5,750 of 6,500 steps
TEACHER_RECIPE = {"warmup": 200 / 6500, "milestones": (4500 / 6500, 5750 / 6500), "gamma": 0.1}
#: seconds per image / step / stage on 2 idle cores, evaluation included, for the "expect ~" lines
#: (measured figures: README and benchmarks/README.md)
EXPECTED = {"data_per_image": 0.004, "teacher_step": 0.26, "student_step": 0.075, "kd_student_step": 0.08,
            "released_teacher": 20.0}


# --------------------------------------------------------------------------------------
# CLI
# --------------------------------------------------------------------------------------
def add_cli_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--out", default=None, metavar="DIR",
                        help="folder for data, runs, results.json and figures; reused by later calls "
                             "[runs/quickstart, with --full runs/quickstart-full]")
    parser.add_argument("--seed", type=int, default=0,
                        help="seed of the students (and of the teacher when DIR has none yet) [0]")
    parser.add_argument("--data", default=None, metavar="DIR",
                        help="synthetic data folder (generated there if missing) [DIR/data]")
    parser.add_argument("--fast", action="store_true",
                        help="smoke test: tiny data and a few steps (seconds; the numbers mean nothing)")
    parser.add_argument("--full", action="store_true",
                        help="the paper's models for a GPU: SimpleBaseline-R50 teacher (trained here) and R18 student "
                             "at 256x192 from synthetic 640x480 images, device input pipeline (~5 min on one H100, "
                             "estimated; hours on a CPU)")
    parser.add_argument("--train-teacher", action="store_true",
                        help="train the teacher from its recipe (~30 min on 2 cores) instead of installing the "
                             "released one; prints the AP difference from the released teacher's card")
    parser.add_argument("--teacher-steps", type=int, default=None, metavar="N",
                        help=f"teacher schedule length (implies training it) [{SETTINGS['teacher_steps']}]")
    parser.add_argument("--student-steps", type=int, default=None, metavar="N",
                        help=f"steps of every student variant [{SETTINGS['student_steps']}]")
    parser.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                        help="extra config override for every run, e.g. --set run.device=cpu (repeatable)")


def cli_main(args: argparse.Namespace) -> int:
    from ikd_edu.io import lock_output_dir

    out = args.out or ("runs/quickstart-full" if args.full else "runs/quickstart")
    with lock_output_dir(out, "quickstart folder"):  # a second quickstart on the same --out is refused
        rows = run_quickstart(out, seed=args.seed, data=args.data, fast=args.fast, overrides=args.overrides,
                              teacher_steps=args.teacher_steps, student_steps=args.student_steps,
                              train_teacher=args.train_teacher, full=args.full)
    return 0 if rows else 1


# --------------------------------------------------------------------------------------
# The pipeline
# --------------------------------------------------------------------------------------
def _say(text: str) -> None:
    print(text, flush=True)


def _fmt_s(seconds: float) -> str:
    return f"{seconds:.0f} s" if seconds < 90 else f"{seconds / 60:.1f} min"


def settings(fast: bool = False, full: bool = False) -> dict:
    """The quickstart's sizes and schedules (``--fast``: the smoke-test ones; ``--full``: the paper's models)."""
    from ikd_edu.train.config import load_config

    s = dict(SETTINGS)
    quick = load_config("quick", role="teacher", check_files=False)
    s.setdefault("batch_size", quick.optim.batch_size)
    if full:
        s.update(FULL)
    if fast:
        s.update(FAST)
        if full:
            s.update(FULL_FAST)
    return s


def paper_model_overrides(s: dict) -> list[str]:
    """Config overrides for settings holding :data:`PAPER_MODELS` (models, crop and image sizes, pipeline); else none."""
    if "teacher_model" not in s:
        return []
    (h, w), (ih, iw) = s["input_size"], s["image_size"]
    return [f"model.teacher={s['teacher_model']}", f"model.student={s['student_model']}",
            f"data.input_size={h},{w}", f"data.heatmap_size={h // 4},{w // 4}", f"data.pipeline={s['pipeline']}",
            f"data.synthetic_image_size={ih},{iw}"]


def _common_overrides(s: dict, data_root: Path, fast: bool) -> list[str]:
    out = [
        f"data.root={data_root}",
        f"data.synthetic_images={s['images']}",
        f"data.synthetic_val_images={s['val_images']}",
        f"data.num_workers={s['num_workers']}",
        f"optim.batch_size={s['batch_size']}",
        "run.tensorboard=false",
    ]
    out += paper_model_overrides(s)  # --full
    if fast:
        out += ["run.eval_batch_size=8", "run.log_every=2", "run.magnitude_batches=1", "run.flip_test=false"]
    return out


def teacher_config(s: dict, out: Path, data_root: Path, seed: int, fast: bool, extra: list[str]):
    from ikd_edu.train.config import flip_only_overrides, load_config

    steps = s["teacher_steps"]
    every = max(1, math.ceil(steps / s["teacher_evals"]))
    milestones = ",".join(str(max(1, round(f * steps))) for f in TEACHER_RECIPE["milestones"])
    overrides = _common_overrides(s, data_root, fast) + [
        *flip_only_overrides(),
        "optim.schedule=multistep", f"optim.milestones=[{milestones}]", f"optim.gamma={TEACHER_RECIPE['gamma']}",
        f"optim.warmup_steps={round(TEACHER_RECIPE['warmup'] * steps)}",
        f"optim.steps={steps}", f"run.eval_every={every}", f"run.ckpt_every={min(every, 250)}",
        f"run.log_every={min(every, 250)}", f"run.out_dir={out / 'teacher'}", f"run.seed={seed}",
    ]
    return load_config("quick", overrides + list(extra), role="teacher")


def student_config(s: dict, out: Path, data_root: Path, seed: int, name: str, terms: list[str], steps: int,
                   fast: bool, extra: list[str]):
    """One student run: ``s['label_subset']`` images, flip-only augmentation, final evaluation only."""
    from ikd_edu.train.config import flip_only_overrides, load_config

    overrides = _common_overrides(s, data_root, fast) + [
        f"data.label_subset={s['label_subset']}",
        "data.subset_seed=0",  # the same labelled images for every variant and seed
        *flip_only_overrides(),
        f"distill.terms={','.join(terms) if terms else 'none'}",
        "distill.teacher_cache=true", "data.cache_crops=true",
        f"model.teacher_checkpoint={out / 'teacher' / 'best.pt'}",
        f"optim.steps={steps}", f"run.eval_every={steps}", f"run.ckpt_every={min(steps, 250)}",
        f"run.out_dir={out / f'seed-{seed}' / name}", f"run.seed={seed}",
    ]
    return load_config("quick", overrides + list(extra), role="student")


def _finished(cfg) -> dict | None:
    """The run's summary.json when it finished the planned steps (then it is skipped)."""
    path = Path(cfg.run.out_dir) / "summary.json"
    if not path.is_file():
        return None
    from ikd_edu.io import read_json

    summary = read_json(path, "run summary", expect=dict, fix=f"delete it to redo or resume the run ({path.parent})")
    final = summary.get("final")
    if final is not None and not isinstance(final, dict):
        raise UserError(f"run summary {path}: 'final' should be a JSON object of metrics; delete it to redo "
                        f"or resume the run ({path.parent})")
    return summary if summary.get("steps") == cfg.optim.steps and final else None


def _train_or_reuse(cfg, label: str, expected_s: float | None, caches=None) -> dict:
    from ikd_edu.train.engine import train

    done = _finished(cfg)
    if done is not None:
        _say(f"      {label}: reusing {cfg.run.out_dir} (finished: AP {done['final'].get('AP', float('nan')):.3f}, "
             f"{done.get('train_s', float('nan')):.0f} s of training)")
        done["reused"] = True
        return done
    resuming = (Path(cfg.run.out_dir) / "last.pt").is_file()
    hint = f", expect ~{_fmt_s(expected_s)} on 2 idle cores" if expected_s else ""
    _say(f"      {label}: {'resuming' if resuming else 'training'} {cfg.optim.steps} steps{hint} -> {cfg.run.out_dir}")
    summary = train(cfg, caches=caches)
    summary["reused"] = False
    return summary


def run_quickstart(out: str | os.PathLike, seed: int = 0, data: str | os.PathLike | None = None, fast: bool = False,
                   overrides: list[str] | None = None, teacher_steps: int | None = None,
                   student_steps: int | None = None, train_teacher: bool = False, full: bool = False) -> list[dict]:
    """Run (or finish, or reuse) every stage; return this seed's result rows (also in ``out/results.json``)."""
    t0 = time.time()
    out = Path(out)
    s = settings(fast, full)
    for key, value in (("teacher_steps", teacher_steps), ("student_steps", student_steps)):
        if value is not None:
            if value < 1:
                raise UserError(f"--{key.replace('_', '-')}: must be >= 1, got {value}")
            s[key] = int(value)
    out.mkdir(parents=True, exist_ok=True)
    extra = list(overrides or [])
    data_root = Path(data) if data else out / "data"
    n_kd = sum(1 for t in STUDENTS.values() if t)
    released = (not train_teacher and not fast and not full and teacher_steps is None
                and s["images"] == SETTINGS["images"])
    teacher_s = EXPECTED["released_teacher"] if released else EXPECTED["teacher_step"] * s["teacher_steps"]
    expected_total = (EXPECTED["data_per_image"] * (s["images"] + s["val_images"]) + teacher_s
                      + s["student_steps"] * (EXPECTED["student_step"] + n_kd * EXPECTED["kd_student_step"])
                      + s["student_steps"] * EXPECTED["kd_student_step"])
    if full:
        _say(f"ikd-edu quickstart --full: out {out}, seed {seed}{' (--fast smoke test)' if fast else ''}; the paper's "
             f"models at {s['input_size'][0]}x{s['input_size'][1]}; first run ~5 min on one H100 (estimated), "
             "hours on a CPU; reruns reuse finished runs")
    else:
        _say(f"ikd-edu quickstart: out {out}, seed {seed}{' (--fast smoke test)' if fast else ''}; "
             f"first run ~{_fmt_s(expected_total)} on 2 idle cores, reruns reuse finished runs")

    # ---- 1. data -----------------------------------------------------------------------
    from ikd_edu.data.synthetic import ensure_synthetic, synthetic_matches

    t = time.time()
    have = synthetic_matches(data_root, s["images"], 0, s["val_images"], s["image_size"])
    _say(f"[1/4] data: {s['images']} train + {s['val_images']} val synthetic images in {data_root}"
         + (" (reusing)" if have else f" (generating, ~{_fmt_s(EXPECTED['data_per_image'] * (s['images'] + s['val_images']))})"))
    ensure_synthetic(data_root, s["images"], seed=0, val_images=s["val_images"], image_size=s["image_size"],
                     progress=not fast and sys.stderr.isatty())
    _say(f"      data ready ({time.time() - t:.0f} s)")

    # ---- 2. teacher --------------------------------------------------------------------
    t_cfg = teacher_config(s, out, data_root, seed, fast, extra)
    _say(f"[2/4] teacher: {t_cfg.model.teacher} on all {s['images']} images, {s['teacher_steps']} steps, "
         f"AP every {t_cfg.run.eval_every} steps")
    teacher = _released_or_trained_teacher(t_cfg, s, data_root, released, fast)
    curve = teacher_curve(Path(t_cfg.run.out_dir))
    if curve:
        _say("      teacher AP by step: " + ", ".join(f"{st}: {ap:.3f}" for st, ap in curve))

    # ---- 3. students -------------------------------------------------------------------
    steps = s["student_steps"]
    _say(f"[3/4] students: {t_cfg.model.student} on {s['label_subset']} labelled images, {steps} steps each, "
         f"seed {seed}; {len(STUDENTS)} variants + labels-only at the IKD student's wall time")
    summaries: dict[str, dict] = {"teacher": teacher}
    configs = {"teacher": t_cfg}
    from ikd_edu.train.caches import CacheStore

    caches = CacheStore()  # the students' crops are cut once, the teacher run over them once (by the IKD student)
    for i, (name, terms) in enumerate(STUDENTS.items()):
        cfg = student_config(s, out, data_root, seed, name, terms, steps, fast, extra)
        configs[name] = cfg
        per = EXPECTED["kd_student_step" if terms else "student_step"] * steps
        summaries[name] = _train_or_reuse(cfg, f"({i + 1}/{len(STUDENTS) + 1}) {name}", per, caches)
    eq_steps, eq_info = equal_time_steps(out / f"seed-{seed}", summaries["student-labels"], summaries["student-ikd"],
                                         steps, s["max_equal_time_factor"])
    cfg = student_config(s, out, data_root, seed, EQUAL_TIME, [], eq_steps, fast, extra)
    configs[EQUAL_TIME] = cfg
    _say(f"      equal time: the IKD student trained {eq_info['ikd_train_s']:.0f} s (teacher cache "
         f"{eq_info['ikd_teacher_cache_s']:.0f} s included), a labels-only step takes "
         f"{eq_info['labels_step_s'] * 1000:.0f} ms -> {eq_steps} steps")
    summaries[EQUAL_TIME] = _train_or_reuse(cfg, f"({len(STUDENTS) + 1}/{len(STUDENTS) + 1}) {EQUAL_TIME}", EXPECTED["student_step"] * eq_steps,
                                        caches)

    # ---- 4. report ---------------------------------------------------------------------
    _say("[4/4] evaluation: COCO keypoint AP on the validation set (pycocotools), params, MACs, CPU latency")
    profiles = profile_models(out, t_cfg, fast)
    rows = result_rows(summaries, configs, profiles, s)
    from ikd_edu.io import write_json

    write_json(out / "results.json", rows)
    write_json(out / f"results-seed{seed}.json", rows)
    all_seeds = collect_seeds(out)
    summary = summarize_seeds(all_seeds)
    write_json(out / "summary.json", {"seeds": sorted(all_seeds), "rows": summary, "teacher_curve": curve,
                                      "equal_time": eq_info, "equal_time_per_seed": equal_time_per_seed(out, all_seeds),
                                      "settings": s})
    figures = make_figures(out, summary, Path(t_cfg.run.out_dir))
    _say("")
    _say(format_table(rows, seed))
    if len(all_seeds) > 1:
        _say("")
        _say(format_seed_table(all_seeds, summary))
    _say("")
    _say(verdict_lines(rows, summary, len(all_seeds)))
    _say(f"wrote {out / 'results.json'}, {out / 'summary.json'}" + "".join(f", {f}" for f in figures)
         + f"; this invocation took {_fmt_s(time.time() - t0)}")
    return rows


def _released_or_trained_teacher(t_cfg, s: dict, data_root: Path, released: bool, fast: bool) -> dict:
    """The teacher's run summary: the released teacher installed (where ``released`` and it fits), else trained."""
    teacher = None
    if _finished(t_cfg) is None and released:
        from ikd_edu.train import released as R

        _say(f"      teacher: installing the released {R.QUICK_TEACHER} (sha256 checked against its card) and "
             f"evaluating it here, ~{_fmt_s(EXPECTED['released_teacher'])}; --train-teacher trains it instead")
        teacher = R.install(t_cfg, data_root, say=_say)
        if teacher is not None:
            _say(f"      teacher: the released converged teacher ({s['teacher_steps']} steps, "
                 f"{teacher.get('train_s', 0) / 60:.0f} min of training on 2 cores): "
                 f"{R.compare_with_card(teacher['final']['AP'], R.load_card())} -> {t_cfg.run.out_dir}")
            teacher["reused"] = True
    if teacher is None:
        teacher = _train_or_reuse(t_cfg, "teacher", EXPECTED["teacher_step"] * s["teacher_steps"])
        if not fast and not teacher.get("released") and s["images"] == SETTINGS["images"] and "teacher_model" not in s:
            _compare_trained_teacher(t_cfg, data_root, teacher)
    return teacher


def _compare_trained_teacher(t_cfg, data_root: Path, teacher: dict) -> None:
    """After training the teacher here: its AP next to the released teacher's card (when the recipes match)."""
    from ikd_edu.train import released as R

    try:
        card = R.load_card()
    except UserError as exc:
        _say(f"      (no comparison with the released teacher: {exc})")
        return
    differ = R.card_mismatch(card, t_cfg, data_root)
    if differ:
        _say(f"      (the released teacher's card has another {' / '.join(differ)}: no comparison)")
        return
    _say(f"      trained here from the recipe: {R.compare_with_card(float(teacher['final']['AP']), card)}")
    _say(f"      {R.compare_curves(teacher_curve(Path(t_cfg.run.out_dir)), card)}")


def result_rows(summaries: dict[str, dict], configs: dict, profiles: dict[str, dict], s: dict) -> list[dict]:
    """One result row per variant of :data:`ROW_ORDER`: metrics, cost, training time, labels, terms, seed."""
    rows = []
    for name in ROW_ORDER:
        sm, cfg = summaries[name], configs[name]
        model = cfg.model.teacher if name == "teacher" else cfg.model.student
        final = sm.get("final", {})
        rows.append({
            "name": name,
            "AP": final.get("AP"),
            "AR": final.get("AR"),
            "AP50": final.get("AP50"),
            "AP75": final.get("AP75"),
            "params": profiles[model]["params"],
            "gmacs": profiles[model]["gmacs"],
            "latency_ms": profiles[model]["latency_ms"],
            "train_s": sm.get("train_s"),
            "teacher_cache_s": sm.get("teacher_cache_s"),
            "steps": sm.get("steps"),
            "labelled_images": s["images"] if name == "teacher" else s["label_subset"],
            "terms": [] if name == "teacher" else list(cfg.distill.terms),
            "seed": run_seed(cfg),
            "model": model,
            "out_dir": cfg.run.out_dir,
        })
    return rows


def run_seed(cfg) -> int:
    """The seed a run was trained with (its config.yaml): a reused teacher keeps its own."""
    path = Path(cfg.run.out_dir) / "config.yaml"
    if path.is_file():
        import yaml

        try:
            return int(yaml.safe_load(path.read_text())["run"]["seed"])
        except (KeyError, TypeError, ValueError, yaml.YAMLError):
            pass
    return cfg.run.seed


def equal_time_steps(seed_dir: Path, labels: dict, ikd: dict, steps: int, max_factor: float = 10) -> tuple[int, dict]:
    """Steps that give a labels-only student the IKD student's training time (stored, so reruns agree)."""
    path = seed_dir / "equal_time.json"
    if path.is_file():
        info = read_equal_time(path)
        return int(info["steps"]), info
    labels_step = float(labels["train_s"]) / max(int(labels["steps"]), 1)
    ikd_s = float(ikd["train_s"])
    eq = min(max(steps, int(round(ikd_s / max(labels_step, 1e-9)))), int(max_factor * steps))
    info = {"ikd_train_s": ikd_s, "ikd_teacher_cache_s": float(ikd.get("teacher_cache_s", 0.0)),
            "labels_train_s": float(labels["train_s"]), "labels_step_s": labels_step, "steps": eq,
            "ikd_steps": int(ikd["steps"])}
    from ikd_edu.io import write_json

    write_json(path, info)
    return eq, info


def read_equal_time(path: Path) -> dict:
    """A seed run's ``equal_time.json``, checked: a JSON object with a positive integer ``steps``."""
    from ikd_edu.io import read_json

    info = read_json(path, "equal-time file", expect=dict, fix="delete it to recompute it")
    if isinstance(info.get("steps"), bool) or not isinstance(info.get("steps"), int) or info["steps"] < 1:
        raise UserError(f"equal-time file {path} has no positive integer 'steps'; delete it to recompute it")
    return info


def equal_time_per_seed(out: Path, seeds) -> dict[str, dict]:
    """``{seed: equal_time.json}`` of every seed run in ``out`` that has one (wall times drift between runs)."""
    paths = {seed: out / f"seed-{seed}" / "equal_time.json" for seed in sorted(seeds)}
    return {str(seed): read_equal_time(path) for seed, path in paths.items() if path.is_file()}


def teacher_curve(run_dir: Path) -> list[tuple[int, float]]:
    """(step, AP) of the teacher's evaluations (from its eval.csv)."""
    import csv

    path = run_dir / "eval.csv"
    if not path.is_file():
        return []
    try:
        with open(path, newline="") as fh:
            return [(int(float(r["step"])), float(r["AP"])) for r in csv.DictReader(fh) if r.get("AP")]
    except (KeyError, TypeError, ValueError, UnicodeDecodeError, csv.Error):
        raise UserError(f"evaluation log {path} is not a CSV with step and AP columns; delete it (the teacher's "
                        "next evaluation writes it again) or the whole run folder to redo it") from None


def profile_models(out: Path, cfg, fast: bool) -> dict[str, dict]:
    """params, GMACs and CPU latency (batch 1, one thread) of the teacher and student architectures (cached in DIR)."""
    from ikd_edu.io import write_json

    path = out / "profile.json"
    from ikd_edu.io import read_json

    cache = read_json(path, "profile cache", expect=dict, fix="delete it to measure again") if path.is_file() else {}
    for entry in cache.values():
        if not isinstance(entry, dict) or not {"params", "gmacs", "latency_ms"} <= set(entry):
            raise UserError(f"profile cache {path} has malformed entries; delete it to measure again")
    size = tuple(cfg.data.input_size)
    key = f"{size[0]}x{size[1]}"
    changed = False
    for name in (cfg.model.teacher, cfg.model.student):
        if f"{name}@{key}" in cache:
            continue
        import torch

        from ikd_edu.models import build_model
        from ikd_edu.profile import count_macs, count_params, measure_latency

        model = build_model(name, num_joints=cfg.num_joints).eval()
        # batch 1 on one thread: at batch 1 a second thread mostly waits to be woken (the
        # figure then depends on the machine's load more than on the model)
        threads = torch.get_num_threads()
        torch.set_num_threads(1)
        try:
            with torch.no_grad():
                latency = measure_latency(model, size, batch=1, device="cpu", warmup=1 if fast else 3,
                                          iters=2 if fast else 20)
        finally:
            torch.set_num_threads(threads)
        cache[f"{name}@{key}"] = {"params": count_params(model), "gmacs": round(count_macs(model, size) / 1e9, 4),
                                  "latency_ms": round(float(latency), 2)}
        changed = True
    if changed:
        write_json(path, cache)
    return {name: cache[f"{name}@{key}"] for name in (cfg.model.teacher, cfg.model.student)}


def collect_seeds(out: Path) -> dict[int, list[dict]]:
    """Every ``results-seed<S>.json`` in ``out``: seed -> rows."""
    found = {}
    for p in sorted(out.glob("results-seed*.json")):
        from ikd_edu.io import read_json

        try:
            seed = int(p.stem[len("results-seed"):])
        except ValueError:
            continue
        rows = read_json(p, "results file", expect=list, fix="delete it to recompute that seed")
        if not all(isinstance(r, dict) and isinstance(r.get("name"), str) for r in rows):
            raise UserError(f"results file {p} should be a list of rows with a 'name'; delete it to recompute that seed")
        found[seed] = rows
    return found


def summarize_seeds(all_seeds: dict[int, list[dict]]) -> list[dict]:
    """Per variant: AP per seed, mean, sample std (ddof 1) and the number of seeds."""
    out = []
    for name in ROW_ORDER:
        values = {seed: next((r["AP"] for r in rows if r["name"] == name and r.get("AP") is not None), None)
                  for seed, rows in sorted(all_seeds.items())}
        aps = [v for v in values.values() if v is not None]
        if not aps:
            continue
        mean, std = mean_std(aps)
        out.append({"name": name, "AP_mean": mean, "AP_std": std, "n": len(aps),
                    "AP_per_seed": {str(k): v for k, v in values.items()}})
    return out


def make_figures(out: Path, summary: list[dict], teacher_dir: Path) -> list[Path]:
    """``ablation.png`` (mean +- std over seeds) and ``teacher_curves.png`` (ikd_edu.viz)."""
    import matplotlib

    matplotlib.use("Agg", force=False)
    import matplotlib.pyplot as plt

    from ikd_edu.viz.curves import plot_ablation, plot_training_curves

    written = []
    seeds = max((r["n"] for r in summary), default=0)
    fig = plot_ablation(summary, metric="AP", baseline="student-labels", scale=100.0,
                        title=f"quickstart: COCO AP x 100, mean +- std over {seeds} seed(s)")
    fig.savefig(out / "ablation.png", dpi=110, bbox_inches="tight")
    plt.close(fig)
    written.append(out / "ablation.png")
    if (teacher_dir / "metrics.csv").is_file():
        fig = plot_training_curves(teacher_dir, title="teacher: losses and validation AP")
        fig.savefig(out / "teacher_curves.png", dpi=110, bbox_inches="tight")
        plt.close(fig)
        written.append(out / "teacher_curves.png")
    return written


def _f(x, fmt: str, scale: float = 1.0) -> str:
    return "-" if x is None else format(x * scale, fmt)


def format_table(rows: list[dict], seed: int) -> str:
    head = (f"{'model (seed ' + str(seed) + ')':<28} {'AP':>6} {'AR':>6} {'params':>8} {'GMACs':>7} "
            f"{'ms/img':>7} {'steps':>6} {'train':>8}  labels")
    lines = [head, "-" * len(head)]
    for r in rows:
        lines.append(f"{r['name']:<28} {_f(r['AP'], '.1f', 100):>6} {_f(r['AR'], '.1f', 100):>6} "
                     f"{r['params'] / 1e6:>7.2f}M {r['gmacs']:>7.3f} {r['latency_ms']:>7.2f} {r['steps']:>6} "
                     f"{_f(r['train_s'], '.0f'):>7}s  {r['labelled_images']}")
    lines.append("AP, AR: COCO keypoint metrics x 100 on the validation images; train: seconds of training "
                 "(teacher cache included, evaluation excluded); ms/img: CPU latency at batch 1 on one thread")
    return "\n".join(lines)


def format_seed_table(all_seeds: dict, summary: list[dict]) -> str:
    seeds = sorted(all_seeds)
    head = f"{'AP x 100':<28} " + " ".join(f"{'seed ' + str(s):>8}" for s in seeds) + f" {'mean':>7} {'std':>6}"
    lines = [head, "-" * len(head)]
    for r in summary:
        per = " ".join(f"{_f(r['AP_per_seed'].get(str(s)), '.1f', 100):>8}" for s in seeds)
        lines.append(f"{r['name']:<28} {per} {r['AP_mean'] * 100:>7.1f} {r['AP_std'] * 100:>6.1f}")
    return "\n".join(lines)


def verdict(mean: float, std: float, base_mean: float, base_std: float, n: int) -> str:
    """helps / hurts / no effect / inconclusive, from means and seed-to-seed std (AP x 100) over ``n`` seeds.

    With ``d = mean - base_mean`` and ``s = max(std, base_std)``: *helps* if ``d > 2 s``,
    *hurts* if ``d < -2 s``, *no effect* if ``|d| <= s``, else *inconclusive*; one seed is
    always *inconclusive* (no spread to compare with).
    """
    if n < 2:
        return "inconclusive (one seed)"
    d, spread = mean - base_mean, max(std, base_std)
    if d > 2 * spread:
        return "helps"
    if d < -2 * spread:
        return "hurts"
    return "no effect" if abs(d) <= spread else "inconclusive"


def verdict_rows(summary: list[dict]) -> list[dict]:
    """Every variant against ``student-labels`` (and IKD against the equal-time student): difference and verdict."""
    by = {r["name"]: r for r in summary}
    out = []
    pairs = [(name, "student-labels") for name in ROW_ORDER if name not in ("teacher", "student-labels")]
    pairs.append(("student-ikd", EQUAL_TIME))
    for name, base in pairs:
        if name not in by or base not in by:
            continue
        a, b = by[name], by[base]
        n = min(a["n"], b["n"])
        out.append({"name": name, "baseline": base, "n": n, "diff": 100 * (a["AP_mean"] - b["AP_mean"]),
                    "spread": 100 * max(a["AP_std"], b["AP_std"]),
                    "verdict": verdict(100 * a["AP_mean"], 100 * a["AP_std"], 100 * b["AP_mean"], 100 * b["AP_std"], n)})
    return out


def verdict_lines(rows: list[dict], summary: list[dict], n_seeds: int) -> str:
    """Plain-language reading of the table, made from its numbers (this seed, then every seed in DIR)."""
    ap = {r["name"]: r["AP"] for r in rows if r["AP"] is not None}
    if not {"student-ikd", "student-labels", EQUAL_TIME, "teacher"} <= set(ap):
        return ""
    d_steps = (ap["student-ikd"] - ap["student-labels"]) * 100
    d_time = (ap["student-ikd"] - ap[EQUAL_TIME]) * 100
    out = [f"this seed: IKD vs labels only, same steps: {d_steps:+.1f} AP; same wall time: {d_time:+.1f} AP; "
           f"teacher {ap['teacher'] * 100:.1f} AP."]
    if n_seeds > 1:
        for v in verdict_rows(summary):
            out.append(f"over {v['n']} seeds: {v['name']} - {v['baseline']} = {v['diff']:+.1f} AP "
                       f"(seed-to-seed std up to {v['spread']:.1f}): {v['verdict']}")
    else:
        out.append("one seed so far: run again with --seed 1 (and 2) to see the seed-to-seed spread and the verdicts.")
    return "\n".join(out)
