"""What every course notebook starts with: the mode, the expected times, saved-or-trained runs.

A notebook begins with::

    from ikd_edu import course
    mode = course.setup()   # one line: "quick mode: no CUDA GPU found ..." (or full mode and why)

and wraps every slow cell in :func:`expect`, which states the expected time on 2 CPU cores
and on a GPU *before* the work starts and the measured time after it::

    with course.expect("train the teacher", cpu="~60 s", gpu="~10 s"):
        teacher = course.teacher(mode)

**Modes.** *quick* (the default without a CUDA GPU, or whenever ``IKD_QUICK=1``): the
synthetic stick-figure set and CPU-sized models and schedules, every notebook <= 3 min on
2 cores. *full* (a CUDA GPU and ``IKD_QUICK`` unset or ``0``): the quickstart's sizes on the
synthetic set. COCO, when ``data/coco`` holds it, is shown in notebook 00's tour; training on
it is the README's torchrun recipe (days of GPU time, not a notebook cell). A missing optional
piece changes the mode with a one-line reason, never a traceback.

**The teacher.** Students distil from the **released** ``quick-teacher``
(:mod:`ikd_edu.train.released`): converged on 8,000 synthetic images, shipped with the package
and checked against its card, as you would load released weights (:func:`teacher`). Notebook
02 also trains a short teacher of its own (:func:`own_teacher`) to show the curve and the
cost; :func:`retrain_released_teacher` re-trains the released one from its recipe.

**Runs.** Slow steps load a finished run when one exists and train it otherwise
(:func:`train_or_load`); runs live in :func:`course_dir` (``IKD_COURSE_DIR``, default
``<repo>/runs/course``), so notebook 06 reuses the students of 03-05, and re-executing a
notebook takes seconds. Sentences that read a result are made from the numbers
(:func:`effect`, :func:`compare`), never fixed text.
"""
from __future__ import annotations

import contextlib
import json
import os
import platform
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterator, Sequence

from ikd_edu.apps.quickstart import PAPER_MODELS, paper_model_overrides

QUICK_ENV = "IKD_QUICK"
DIR_ENV = "IKD_COURSE_DIR"
QUICKSTART_ENV = "IKD_QUICKSTART_DIR"

#: sizes and schedules per mode (the rest comes from the ``quick`` preset)
QUICK = {
    "images": 2000,  # synthetic training images (all of them: labels of notebook 02's own teacher)
    "val_images": 200,  # synthetic validation images
    "label_subset": 500,  # the students' labelled images (the quickstart's 500)
    "teacher_steps": 300,  # notebook 02's own short teacher; students distil from the released one
    "student_steps": 400,
    "batch_size": 32,
    "num_workers": 0,  # 2-core laptops: loading in the main process avoids worker start-up
}
FULL = {
    "images": 8000,
    "val_images": 500,
    "label_subset": 500,
    "teacher_steps": 1500,
    "student_steps": 800,
    "batch_size": 32,
    "num_workers": 4,
    # the paper's models at the paper's size (COCO when data/coco holds it, else synthetic 640x480);
    # expected on one H100/H200 (bf16, device pipeline): teacher 1,500 steps x 32 ~2-4 min, each
    # student 800 steps ~1-2 min plus evaluation (not yet measured: benchmarks/gpu_train.py)
    **PAPER_MODELS,
}


@dataclass
class Mode:
    """Which mode a notebook runs in, and why. ``settings`` are the sizes of :data:`QUICK` / :data:`FULL`."""

    quick: bool
    device: str  # "cpu" or "cuda"
    reason: str  # one line: why this mode
    coco_root: Path | None = None  # COCO (full mode only) when data/coco holds it
    settings: dict = field(default_factory=dict)

    @property
    def name(self) -> str:
        return "quick" if self.quick else "full"


def _env_flag(value: str | None) -> bool | None:
    if value is None or value.strip() == "":
        return None
    return value.strip().lower() not in ("0", "false", "no", "off")


def repo_root(start: Path | None = None) -> Path | None:
    """The ikd-edu checkout above ``start`` (default: the working directory), if any."""
    here = (start or Path.cwd()).resolve()
    for folder in (here, *here.parents):
        pyproject = folder / "pyproject.toml"
        if pyproject.is_file() and 'name = "ikd-edu"' in pyproject.read_text(errors="ignore"):
            return folder
    return None


def course_dir() -> Path:
    """Where the course keeps its data and runs: ``$IKD_COURSE_DIR`` or ``<repo>/runs/course``."""
    if os.environ.get(DIR_ENV):
        return Path(os.environ[DIR_ENV]).expanduser()
    root = repo_root()
    return (root if root is not None else Path.cwd()) / "runs" / "course"


def quickstart_summary() -> tuple[Path, dict | None]:
    """``(path, summary)`` of the README quickstart's multi-seed ``summary.json`` (None when absent or unreadable).

    Where: ``$IKD_QUICKSTART_DIR`` or ``<repo>/runs/quickstart`` (README command 1 writes it).
    """
    folder = Path(os.environ[QUICKSTART_ENV]).expanduser() if os.environ.get(QUICKSTART_ENV) else \
        (repo_root() or Path.cwd()) / "runs" / "quickstart"
    path = folder / "summary.json"
    try:
        summary = json.loads(path.read_text())
    except (OSError, ValueError, RecursionError):
        return path, None
    ok = isinstance(summary, dict) and isinstance(summary.get("rows"), list) and isinstance(summary.get("seeds"), list)
    return path, summary if ok else None


def _find_coco() -> Path | None:
    root = repo_root() or Path.cwd()
    coco = root / "data" / "coco"
    ann = coco / "annotations" / "person_keypoints_val2017.json"
    return coco if ann.is_file() and (coco / "val2017").is_dir() else None


def detect_mode() -> Mode:
    """Quick unless a CUDA GPU is present and ``IKD_QUICK`` is not set to 1 (see the module docstring)."""
    import torch

    forced = _env_flag(os.environ.get(QUICK_ENV))
    has_cuda = torch.cuda.is_available()
    device = "cuda" if has_cuda else "cpu"
    if forced is True:
        reason = f"{QUICK_ENV}=1 is set" + (" (a CUDA GPU is present; unset it for full mode)" if has_cuda else "")
        return Mode(True, device, reason, settings=dict(QUICK))
    if not has_cuda:
        reason = "no CUDA GPU found" + (f" ({QUICK_ENV}=0 asks for full mode, which needs one)" if forced is False else "")
        return Mode(True, device, reason, settings=dict(QUICK))
    coco = _find_coco()
    where = (f"COCO found in {coco} (shown in the tour; the course trains on the synthetic set)" if coco
             else "no COCO in data/coco (optional: only the tour shows it)")
    return Mode(False, device, f"CUDA GPU {torch.cuda.get_device_name(0)}; {where}", coco_root=coco,
                settings=dict(FULL))


def setup(seed: int = 0) -> Mode:
    """Detect the mode, print it in one line, seed everything; call once at the top of a notebook."""
    import torch

    mode = detect_mode()
    print(f"{mode.name} mode: {mode.reason}. Runs and data: {course_dir()}")
    torch.manual_seed(seed)
    return mode


def _fmt(seconds: float) -> str:
    return f"{seconds:.1f} s" if seconds < 90 else f"{seconds / 60:.1f} min"


@contextlib.contextmanager
def expect(what: str, cpu: str, gpu: str) -> Iterator[None]:
    """Print the expected time of a slow step (2 CPU cores / GPU) before it runs, the measured one after."""
    print(f"{what}: expect {cpu} on 2 CPU cores, {gpu} on a GPU ...", flush=True)
    t0 = time.perf_counter()
    yield
    print(f"{what}: done in {_fmt(time.perf_counter() - t0)}", flush=True)


# --------------------------------------------------------------------------------------
# Environment check (notebook 00)
# --------------------------------------------------------------------------------------
def _version(module: str) -> str:
    try:
        mod = __import__(module)
    except Exception as exc:  # an optional piece missing or broken: report, never raise
        return f"missing ({type(exc).__name__})"
    return str(getattr(mod, "__version__", "installed"))


def fiftyone_db_status() -> str:
    """Whether FiftyOne and its MongoDB start here (notebook 08 needs them; it falls back without)."""
    from ikd_edu.browse import AppUnavailable, check_app_available

    try:
        check_app_available()
    except AppUnavailable as exc:
        return f"not available ({exc.case}): notebook 08 falls back to a static gallery"
    return "FiftyOne database reachable"


def environment_report() -> list[tuple[str, str]]:
    """(item, value) rows: Python, torch, torchvision, GPU, the course libraries, data found."""
    import torch

    rows = [("python", platform.python_version()), ("platform", platform.platform(terse=True))]
    for module in ("torch", "torchvision", "numpy", "matplotlib", "pycocotools", "ipywidgets", "captum", "fiftyone"):
        rows.append((module, _version(module)))
    if torch.cuda.is_available():
        rows.append(("GPU", f"{torch.cuda.get_device_name(0)} (CUDA {torch.version.cuda})"))
    else:
        rows.append(("GPU", "none (quick mode)"))
    rows.append(("CPU threads", str(torch.get_num_threads())))
    rows.append(("FiftyOne DB", fiftyone_db_status()))
    coco = _find_coco()
    rows.append(("COCO", str(coco) if coco else "not found in data/coco (optional; see data/README.md)"))
    rows.append(("course dir", str(course_dir())))
    return rows


def print_environment() -> None:
    rows = environment_report()
    width = max(len(k) for k, _ in rows)
    for key, value in rows:
        print(f"{key:<{width}}  {value}")


# --------------------------------------------------------------------------------------
# Data, configs, runs
# --------------------------------------------------------------------------------------
def data_root(mode: Mode, progress: bool = False) -> Path:
    """The synthetic set of this mode (generated on first use: 20-90 s on 2 CPU cores in quick mode).

    ``progress=True`` shows a tqdm bar while images are drawn (nothing when the set is reused).
    """
    from ikd_edu.data.synthetic import ensure_synthetic

    s = mode.settings
    if "image_size" in s:  # full mode: COCO-like image size
        h, w = s["image_size"]
        return ensure_synthetic(course_dir() / f"data-{s['images']}-{h}x{w}", s["images"], seed=0,
                                val_images=s["val_images"], image_size=(h, w), progress=progress)
    root = course_dir() / f"data-{s['images']}"
    return ensure_synthetic(root, s["images"], seed=0, val_images=s["val_images"], progress=progress)


def run_overrides(mode: Mode, role: str, steps: int) -> list[str]:
    """The ``--set`` overrides of this mode's runs on the ``quick`` preset (all but the terms and the folder).

    The same list drives :func:`config` and the capstone's ``ikd-edu ablation`` command line, so
    both train students the same way: ``settings['label_subset']`` labelled images, flip-only
    augmentation, the teacher-output and crop caches, the released teacher.
    """
    from ikd_edu.train.config import flip_only_overrides

    s = mode.settings
    base = [
        f"data.root={data_root(mode)}", f"data.synthetic_images={s['images']}",
        f"data.synthetic_val_images={s['val_images']}", f"data.num_workers={s['num_workers']}",
        f"optim.batch_size={s['batch_size']}", f"optim.steps={steps}", f"run.eval_every={steps}",
        f"run.ckpt_every={min(steps, 250)}", "run.tensorboard=false", "run.progress=off",
        f"run.log_every={max(1, steps // 4)}", f"run.device={mode.device}",
    ]
    if role == "student":
        base += [
            f"data.label_subset={s['label_subset']}", "data.subset_seed=0",
            *flip_only_overrides(),
            "distill.teacher_cache=true", "data.cache_crops=true",
            f"model.teacher_checkpoint={teacher_checkpoint(mode)}",
        ]
    return base + paper_overrides(mode)


def paper_overrides(mode: Mode) -> list[str]:
    """Full mode: the paper's teacher and student at 256x192 (on COCO when present); quick mode: none."""
    over = paper_model_overrides(mode.settings)
    if over and mode.coco_root is not None:
        over += ["data.dataset=coco", f"data.root={mode.coco_root}",
                 "data.train_ann=annotations/person_keypoints_train2017.json", "data.train_images=train2017",
                 "data.val_ann=annotations/person_keypoints_val2017.json", "data.val_images=val2017"]
    return over


def config(mode: Mode, role: str, terms: Sequence[str] = (), name: str | None = None,
           steps: int | None = None, overrides: Sequence[str] = ()):
    """A :class:`ikd_edu.train.config.Config` for a course run in ``course_dir()/<mode>/<name>``.

    Teachers train on every training image with the ``quick`` preset's augmentation;
    students on ``settings['label_subset']`` images with flip-only augmentation, the
    teacher-output cache and the crop cache (the quickstart's setting, which makes
    distillation visible).
    ``name`` defaults to ``teacher`` / ``student-labels`` / ``student-logit+feature`` ...
    """
    from ikd_edu.train.config import load_config

    s = mode.settings
    terms = list(terms)
    if role == "teacher" and terms:
        raise ValueError("a teacher is trained on labels only; pass terms=() for role='teacher'")
    steps = int(steps or (s["teacher_steps"] if role == "teacher" else s["student_steps"]))
    run_dir = course_dir() / mode.name
    base = run_overrides(mode, role, steps)
    if role == "student":
        base.append(f"distill.terms={','.join(terms) if terms else 'none'}")
    cfg_probe = load_config("quick", base + list(overrides), role=role, check_files=False)
    folder = name or cfg_probe.variant_name()
    return load_config("quick", base + [f"run.out_dir={run_dir / folder}"] + list(overrides), role=role,
                       check_files=False)


def teacher_checkpoint(mode: Mode) -> Path:
    """The teacher students distil from: the released ``quick-teacher``, installed in the course folder
    (full mode: the SimpleBaseline-R50 teacher trained by :func:`own_teacher`)."""
    if paper_overrides(mode):
        return course_dir() / mode.name / "teacher" / "best.pt"
    return Path(released_teacher_config(mode).run.out_dir) / "best.pt"


def released_teacher_config(mode: Mode):
    """The released teacher's recipe (the quickstart's teacher) on this mode's data, run folder ``<mode>/teacher-released``."""
    from ikd_edu.apps import quickstart as Q

    s = mode.settings
    qs = dict(Q.settings(), images=s["images"], val_images=s["val_images"], num_workers=s["num_workers"])
    return Q.teacher_config(qs, course_dir() / mode.name, data_root(mode), 0, False,
                            [f"run.out_dir={course_dir() / mode.name / 'teacher-released'}",
                             f"run.device={mode.device}", "run.progress=off"])


def finished(cfg) -> dict | None:
    """The run's ``summary.json`` when it completed ``cfg.optim.steps`` steps, else None."""
    path = Path(cfg.run.out_dir) / "summary.json"
    try:
        summary = json.loads(path.read_text())
    except (OSError, ValueError, RecursionError):
        return None
    if not isinstance(summary, dict) or not isinstance(summary.get("final"), dict):
        return None  # not a finished run's summary: train (or resume) again
    return summary if summary.get("steps") == cfg.optim.steps and summary.get("final") else None


_CACHES = None  # the notebook kernel's CacheStore: its students cut their crops once


def train_or_load(cfg) -> dict:
    """The run's summary: loaded when it already finished, trained (or resumed) otherwise.

    Runs trained in one kernel share a :class:`~ikd_edu.train.caches.CacheStore` (crops cut
    once, teacher outputs reused where a cache holds them).
    """
    global _CACHES
    from ikd_edu.train.caches import CacheStore
    from ikd_edu.train.engine import train

    done = finished(cfg)
    if done is not None:
        print(f"loaded the finished run {cfg.run.out_dir} (AP {done['final'].get('AP', float('nan')):.3f})")
        return done
    _CACHES = _CACHES or CacheStore()
    summary = train(cfg, caches=_CACHES)
    print(f"trained {cfg.run.out_dir}: AP {summary['final'].get('AP', float('nan')):.3f} after {cfg.optim.steps} steps")
    return summary


def load_model(cfg, checkpoint: str = "best.pt"):
    """The trained network of a course run (eval mode, CPU or the mode's device)."""
    from ikd_edu.models import build_model
    from ikd_edu.models.checkpoints import load_pose_checkpoint

    path = Path(cfg.run.out_dir) / checkpoint
    if not path.is_file():
        raise FileNotFoundError(f"{path} does not exist: run course.train_or_load(cfg) first")
    model = build_model(cfg.trained_model_name, num_joints=cfg.num_joints)
    load_pose_checkpoint(model, path, strict=True)
    return model.to(cfg.run.device if cfg.run.device != "auto" else "cpu").eval()


def teacher(mode: Mode):
    """The released teacher, ``(model, summary)``: installed (sha256 checked) and evaluated on this mode's
    validation images the first time, loaded afterwards. ``summary['final']`` is the AP measured here."""
    from ikd_edu.train import released as R

    if paper_overrides(mode):  # full mode: no released R50 teacher for this data; train the paper's
        return own_teacher(mode)
    cfg = released_teacher_config(mode)
    summary = finished(cfg)
    if summary is None:
        summary = R.install(cfg, None)  # data_root None: the course set has other sizes than the card's
        if summary is None:
            raise RuntimeError("the released teacher could not be installed (see above); "
                               "course.own_teacher(mode) trains a short one instead")
    card = R.load_card()
    print(f"the released {R.QUICK_TEACHER} ({card['steps']} steps on {card['synthetic']['train_images']:,} images; "
          f"card: AP {100 * card['final']['AP']:.1f} on {card['synthetic']['val_images']} validation images): "
          f"AP {100 * summary['final']['AP']:.1f} on this course's {mode.settings['val_images']}")
    return load_model(cfg), summary


def own_teacher(mode: Mode, steps: int | None = None):
    """A short teacher trained here (the ``quick`` preset's recipe, ``teacher_steps`` steps): ``(model, summary)``."""
    cfg = config(mode, "teacher", steps=steps)
    summary = train_or_load(cfg)
    return load_model(cfg), summary


def retrain_released_teacher(mode: Mode):
    """Train the released teacher again from its recipe (~30 min on 2 cores) and compare with its card."""
    from ikd_edu.apps import quickstart as Q
    from ikd_edu.train import released as R
    from ikd_edu.data.synthetic import ensure_synthetic

    card = R.load_card()
    syn = card["synthetic"]
    root = ensure_synthetic(course_dir() / f"data-{syn['train_images']}", syn["train_images"], seed=syn["seed"],
                            val_images=syn["val_images"], progress=False)
    cfg = Q.teacher_config(Q.settings(), course_dir() / mode.name / "teacher-retrained", root, 0, False,
                           [f"run.out_dir={course_dir() / mode.name / 'teacher-retrained'}", f"run.device={mode.device}"])
    summary = train_or_load(cfg)
    print(R.compare_with_card(float(summary["final"]["AP"]), card, where="re-trained here"))
    print(R.compare_curves(Q.teacher_curve(Path(cfg.run.out_dir)), card))
    return load_model(cfg), summary


def student(mode: Mode, terms: Sequence[str] = (), steps: int | None = None, overrides: Sequence[str] = ()):
    """A course student with these distillation terms (trains the teacher first if needed): ``(model, summary)``."""
    if terms:
        teacher(mode)
    cfg = config(mode, "student", terms=terms, steps=steps, overrides=overrides)
    summary = train_or_load(cfg)
    return load_model(cfg), summary


#: seed-to-seed standard deviation (AP x 100) assumed for one course student when only one seed was
#: run; the quickstart's students measured 0.3-1.0 over seeds (README), short course runs vary more
SEED_NOISE_AP = 1.0


def effect(ap: float, baseline_ap: float, what: str, baseline: str = "labels only",
           noise_ap: float = SEED_NOISE_AP) -> str:
    """One sentence that reads a result from its numbers: ``what`` vs ``baseline`` (APs in 0-1).

    *helps* above ``+2 noise_ap`` AP x 100, *hurts* below ``-2 noise_ap``, otherwise *no clear
    effect at this budget* - a single seed cannot tell smaller differences from noise.
    """
    d = 100 * (ap - baseline_ap)
    if d > 2 * noise_ap:
        word = "helps"
    elif d < -2 * noise_ap:
        word = "hurts"
    else:
        word = "shows no clear effect"
    return (f"{what}: AP {100 * ap:.1f} vs {100 * baseline_ap:.1f} for {baseline} ({d:+.1f} AP): {word} at this "
            f"budget (one seed; differences within +-{2 * noise_ap:.1f} AP are seed noise)")


def compare(summaries: dict, baseline: str = "labels only", noise_ap: float = SEED_NOISE_AP) -> list[str]:
    """:func:`effect` for every run of ``summaries`` (name -> run summary) against ``summaries[baseline]``."""
    base = summaries[baseline]["final"]["AP"]
    return [effect(sm["final"]["AP"], base, name, baseline, noise_ap) for name, sm in summaries.items()
            if name != baseline]


def val_batch(mode: Mode, count: int = 8, start: int = 0) -> dict:
    """``count`` validation crops of this mode's data as one batch (the dataset's dict of tensors).

    ``batch["image"]`` is ``(count, 3, H, W)`` normalised, ``batch["heatmaps"]`` ``(count, K, h, w)``
    targets, ``batch["joints"]`` ``(count, K, 3)`` in image pixels; see ``TopDownCocoDataset``.
    """
    import torch

    from ikd_edu.train.engine import build_dataset

    dataset = build_dataset(config(mode, "teacher"), "val")
    if count < 1 or start < 0 or start + count > len(dataset):
        raise ValueError(f"val_batch: need 0 <= start and start + count <= {len(dataset)} (crops in the val set), "
                         f"got start={start}, count={count}")
    items = [dataset[i] for i in range(start, start + count)]
    return {key: torch.stack([torch.as_tensor(it[key]) for it in items]) for key in items[0]}

