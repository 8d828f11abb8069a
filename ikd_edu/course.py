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

**Runs.** Slow steps load a finished run when one exists and train it otherwise
(:func:`train_or_load`); runs live in :func:`course_dir` (``IKD_COURSE_DIR``, default
``<repo>/runs/course``), so notebook 03 reuses the teacher that notebook 02 trained, and
re-executing a notebook takes seconds.
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

QUICK_ENV = "IKD_QUICK"
DIR_ENV = "IKD_COURSE_DIR"
QUICKSTART_ENV = "IKD_QUICKSTART_DIR"

#: sizes and schedules per mode (the rest comes from the ``quick`` preset)
QUICK = {
    "images": 2000,  # synthetic training images (the teacher's labels)
    "val_images": 200,  # synthetic validation images
    "label_subset": 300,  # the students' labelled images
    "teacher_steps": 300,
    "student_steps": 200,
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


def quickstart_teacher() -> Path | None:
    """``best.pt`` of a finished quickstart teacher (``$IKD_QUICKSTART_DIR``, default ``<repo>/runs/quickstart``).

    README command 1 trains it (converged: 6,500 steps on 8,000 images): a much stronger teacher than
    the quick mode's own, so quick-mode notebooks use it when it is there.
    """
    if os.environ.get(QUICKSTART_ENV):
        folder = Path(os.environ[QUICKSTART_ENV]).expanduser()
    else:
        folder = (repo_root() or Path.cwd()) / "runs" / "quickstart"
    teacher_dir = folder / "teacher"
    try:
        summary = json.loads((teacher_dir / "summary.json").read_text())
    except (OSError, ValueError, RecursionError):
        return None
    best = teacher_dir / "best.pt"
    return best if isinstance(summary, dict) and isinstance(summary.get("final"), dict) and best.is_file() else None


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
def data_root(mode: Mode) -> Path:
    """The synthetic set of this mode (generated on first use, a few seconds in quick mode)."""
    from ikd_edu.data.synthetic import ensure_synthetic

    s = mode.settings
    root = course_dir() / f"data-{s['images']}"
    return ensure_synthetic(root, s["images"], seed=0, val_images=s["val_images"], progress=False)


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
            "data.augment.scale_factor=0", "data.augment.rotation_prob=0", "data.augment.half_body_prob=0",
            f"distill.terms={','.join(terms) if terms else 'none'}", "distill.teacher_cache=true", "data.cache_crops=true",
            f"model.teacher_checkpoint={teacher_checkpoint(mode)}",
        ]
    cfg_probe = load_config("quick", base + list(overrides), role=role, check_files=False)
    folder = name or cfg_probe.variant_name()
    return load_config("quick", base + [f"run.out_dir={run_dir / folder}"] + list(overrides), role=role,
                       check_files=False)


def teacher_checkpoint(mode: Mode) -> Path:
    """The teacher students distil from: the quickstart's (quick mode, when present) or the course's own."""
    if mode.quick:
        found = quickstart_teacher()
        if found is not None:
            return found
    return course_dir() / mode.name / "teacher" / "best.pt"


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


def train_or_load(cfg) -> dict:
    """The run's summary: loaded when it already finished, trained (or resumed) otherwise."""
    from ikd_edu.train.engine import train

    done = finished(cfg)
    if done is not None:
        print(f"loaded the finished run {cfg.run.out_dir} (AP {done['final'].get('AP', float('nan')):.3f})")
        return done
    summary = train(cfg)
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
    """The teacher: ``(model, summary)``. Quick mode uses the quickstart's teacher when it exists;
    otherwise the course teacher is trained once per mode and loaded afterwards."""
    cfg = config(mode, "teacher")
    path = teacher_checkpoint(mode)
    if path.parent != Path(cfg.run.out_dir):
        summary = json.loads((path.parent / "summary.json").read_text())
        print(f"using the quickstart's teacher {path.parent} (AP {summary['final'].get('AP', float('nan')):.3f} "
              f"on its own validation set); set {QUICKSTART_ENV}=none to train the course's own")
        cfg.run.out_dir = str(path.parent)
        return load_model(cfg), summary
    summary = train_or_load(cfg)
    return load_model(cfg), summary


def student(mode: Mode, terms: Sequence[str] = (), steps: int | None = None, overrides: Sequence[str] = ()):
    """A course student with these distillation terms (trains the teacher first if needed): ``(model, summary)``."""
    if terms:
        teacher(mode)
    cfg = config(mode, "student", terms=terms, steps=steps, overrides=overrides)
    summary = train_or_load(cfg)
    return load_model(cfg), summary


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

