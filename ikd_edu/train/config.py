"""Training configuration: plain dataclasses with commented defaults, YAML presets, overrides.

A run is described by one :class:`Config` made of five parts::

    Config
      data:    DataConfig     which images, crop/heatmap sizes, augmentation, label subset
      model:   ModelConfig    teacher / student names, the teacher checkpoint
      distill: DistillConfig  which distillation terms, their weights and feature taps
      optim:   OptimConfig    optimizer, learning rate schedule, batch size, length
      run:     RunConfig      output folder, seed, device, AMP, logging, evaluation

Every field has a default, written next to it with a comment (nanoGPT style), so this file
*is* the reference of every setting. A preset (``ikd_edu/presets/<name>.yaml``) only lists
what differs from these defaults, and ``--set key=value`` changes single fields::

    >>> from ikd_edu.train.config import load_config
    >>> cfg = load_config("quick", ["optim.lr=1e-3", "run.out_dir=runs/try"], role="teacher")
    >>> cfg.optim.lr
    0.001

Mistakes are caught before any training starts, with a one-line :class:`UserError` that
names the key: ``unknown key 'optim.lrr' (did you mean 'optim.lr'?)``,
``optim.lr: expected a float, got 'abc'``, a missing teacher checkpoint, or a teacher whose
joint count differs from the student's.

``role`` says what is trained: ``"teacher"`` (ground truth only) or ``"student"`` (ground
truth plus any subset of the distillation terms in ``distill.terms``; none = the
labels-only baseline).
"""
from __future__ import annotations

import dataclasses
import difflib
import re
import types
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Optional

from ikd_edu.data.transforms import AugmentConfig
from ikd_edu.distill import registry as terms_registry
from ikd_edu.errors import UserError

PRESET_DIR = Path(__file__).resolve().parent.parent / "presets"

#: distillation terms a user can switch on (``--distill logit,feature,structure``), as registered
#: in :mod:`ikd_edu.distill.registry` at import (the checks read the live table).
#: ``structure`` means both structure losses: pairwise feature affinity and joint relations.
DISTILL_TERMS = terms_registry.user_terms()
#: flip-only augmentation (what the crop and teacher caches need): no scale, rotation or half-body
FLIP_ONLY = {"data.augment.scale_factor": 0, "data.augment.rotation_prob": 0, "data.augment.half_body_prob": 0}


def flip_only_overrides() -> list[str]:
    """``["data.augment.scale_factor=0", ...]``: :data:`FLIP_ONLY` as ``--set`` overrides."""
    return [f"{k}={v}" for k, v in FLIP_ONLY.items()]


def _weight_default(key: str) -> float:
    """The default of a distillation weight: the registry's (one place for every term's default)."""
    return next(t.default_weight for t in terms_registry.terms() if t.weight_key == key)


# --------------------------------------------------------------------------------------
# The five parts
# --------------------------------------------------------------------------------------
@dataclass
class DataConfig:
    """Where the images come from and how one training sample is made."""

    dataset: str = "coco"  # coco | mpii | synthetic (synthetic = COCO layout, generated on demand)
    root: str = "data/coco"  # dataset folder; the paths below are relative to it
    train_ann: str = "annotations/person_keypoints_train2017.json"  # training annotations
    train_images: str = "train2017"  # training image folder
    val_ann: str = "annotations/person_keypoints_val2017.json"  # validation annotations
    val_images: str = "val2017"  # validation image folder
    val_det_file: str = ""  # COCO person detections for evaluation ("" = ground-truth boxes)
    input_size: tuple[int, int] = (256, 192)  # crop (H, W) fed to the network
    heatmap_size: tuple[int, int] = (64, 48)  # target heatmap (h, w) = input / 4
    sigma: float = 2.0  # Gaussian sigma of the target heatmaps, in heatmap pixels
    unbiased_encoding: bool = False  # DARK-style sub-pixel Gaussian centres
    augment: AugmentConfig = field(default_factory=AugmentConfig)  # scale/rotation/flip (SimpleBaseline defaults)
    channel_order: str = "rgb"  # rgb | bgr: input channel order the model expects (bgr = released SimpleBaseline weights)
    target_weight_rule: str = "reference"  # reference (labelled joints keep weight 1 while their 3-sigma window touches the heatmap) | inside-crop (also 0 outside the crop)
    num_workers: int = 4  # DataLoader worker processes per rank (0 = load in the main process)
    pipeline: str = "auto"  # host (decode, crop, encode per person in workers) | device (workers read JPEG bytes; decode once per image, crop, encode on the device) | auto (device on CUDA)
    label_subset: int = 0  # train on N randomly chosen training images only (0 = all): a label-limited student
    subset_seed: int = 0  # which N images; fixed across run seeds so every variant sees the same labels
    val_subset: int = 0  # evaluate on the first N validation images only (0 = all)
    cache_crops: bool = False  # cut and encode each training crop once (both flips) and reuse it (flip-only augmentation)
    synthetic_images: int = 8000  # synthetic only: training images to generate (if missing)
    synthetic_val_images: int = 500  # synthetic only: validation images
    synthetic_seed: int = 0  # synthetic only: generator seed
    synthetic_image_size: tuple[int, int] = (192, 192)  # synthetic only: image (H, W)


@dataclass
class ModelConfig:
    """Which networks. Names come from :func:`ikd_edu.models.list_models`."""

    teacher: str = "simplebaseline-r50"  # the teacher architecture
    student: str = "student"  # the student architecture (ResNet-18 + 3 x 64 deconvs)
    teacher_checkpoint: str = ""  # teacher weights for distillation ("" = <out_root>/teacher/best.pt)
    teacher_options: dict[str, Any] = field(default_factory=dict)  # build_model overrides, e.g. {deconv_channels: 128}
    student_options: dict[str, Any] = field(default_factory=dict)  # build_model overrides for the student
    pretrained: str = ""  # ImageNet trunk for the trained model: "" (random), "imagenet" (torch hub cache) or a path
    freeze_bn: bool = False  # keep BatchNorm in eval mode (running statistics) while training


@dataclass
class DistillConfig:
    """Integral knowledge distillation: which terms, how strong, which layers.

    The student's loss (:class:`ikd_edu.distill.integral.IntegralKD`, ``d`` the decay)::

        L = (1 - a d) L_gt + a d L_logit + beta d L_feat + gamma d L_aff + delta d L_rel

    with only the enabled terms present (no logit term: the first part is just ``L_gt``).

    ``teacher_cache``: the frozen teacher's outputs are computed once for each training crop
    and for its mirror image, both exactly (:class:`ikd_edu.train.caches.TeacherCache`),
    instead of a teacher forward pass on every batch; needs flip-only augmentation. Off by
    default; ``ikd-edu quickstart`` turns it on for its label-limited students.
    """

    terms: list[str] = field(default_factory=list)  # any subset of logit, feature, structure ([] = labels only)
    # every weight's default is the registry's (ikd_edu/distill/registry.py), written here in brackets
    alpha: float = _weight_default("distill.alpha")  # logit KD share a (FPD, 0.5): (1 - a) L_gt + a L_logit
    logit_mode: str = "mse"  # mse | kl: how student and teacher heatmaps are compared
    temperature: float = 1.0  # kl only: softmax temperature
    logit_teacher_weighting: str = "all"  # all (teacher term counts every joint, ours) | target (target weights also weight it, FPD-style code)
    # beta (1e-3): feature KD weight (through a 1x1 adapter + BN)
    feature_weight: float = _weight_default("distill.feature_weight")
    feature_mode: str = "l2"  # l2 (adapter, then MSE) | attention (spatial attention maps, no adapter)
    feature_tap: str = "layer4"  # student and teacher feature matched by feature KD
    affinity_weight: float = _weight_default("distill.affinity_weight")  # gamma (1e-2): structure, feature affinity
    relation_weight: float = _weight_default("distill.relation_weight")  # delta (1e-2): structure, joint relations
    structure_tap: str = "layer4"  # feature the pairwise affinity is computed on
    decay: str = "none"  # none | linear | cosine: distillation weights decayed to 0 over training
    teacher_cache: bool = False  # teacher outputs computed once per training crop and its flip, reused (flip-only augmentation)


@dataclass
class OptimConfig:
    """Optimizer, schedule and length of training (reference: Adam 1e-3, 140 epochs, x0.1 at 90/120)."""

    optimizer: str = "adam"  # adam | adamw | sgd
    lr: float = 1e-3  # peak learning rate
    weight_decay: float = 0.0  # L2 / decoupled weight decay
    momentum: float = 0.9  # sgd only
    schedule: str = "multistep"  # multistep | onecycle | cosine | constant
    milestones: list[int] = field(default_factory=lambda: [90, 120])  # multistep: epochs (or steps if optim.steps > 0)
    gamma: float = 0.1  # multistep: lr factor at each milestone
    pct_start: float = 0.3  # onecycle: fraction of training spent warming up
    warmup_steps: int = 0  # linear warm-up steps (multistep / cosine)
    epochs: int = 140  # training length in epochs (ignored when steps > 0)
    steps: int = 0  # training length in optimizer steps (0 = use epochs)
    batch_size: int = 32  # images per step per process (per GPU)
    grad_clip: float = 0.0  # clip the global gradient norm to this (0 = off)


@dataclass
class RunConfig:
    """Bookkeeping: where outputs go, randomness, hardware, logging and evaluation."""

    out_dir: str = ""  # run folder ("" = runs/<preset>/<role or variant>)
    seed: int = 0  # seeds model init, data order and augmentation
    deterministic: bool = False  # bit-reproducible kernels (slower): torch.use_deterministic_algorithms
    device: str = "auto"  # auto (cuda > mps > cpu) | cpu | cuda | cuda:1 | mps
    amp: str = "auto"  # auto (bf16 if supported else fp16 on CUDA; off on CPU) | bf16 | fp16 | off
    channels_last: str = "auto"  # auto (on for CUDA and CPU: quick models 9-19 % faster per step on 2 cores) | on | off
    compile: bool = False  # torch.compile the trained model, its loss and the frozen teacher's forward
    log_every: int = 50  # print / log losses every N steps (the only host-device sync in the loop)
    eval_every: int = 0  # evaluate every N steps (0 = at the end of every epoch)
    ckpt_every: int = 0  # write last.pt every N steps (0 = at the end of every epoch)
    flip_test: bool = True  # average with the horizontally flipped image at evaluation
    decode: str = "quarter"  # heatmap decoding: quarter | dark | argmax
    eval_batch_size: int = 64  # images per evaluation batch per process
    magnitude_batches: int = 3  # distillation: log each term's size on the first N batches
    magnitude_ratio: float = 100.0  # warn when one weighted term is more than this times another
    tensorboard: bool = True  # write TensorBoard events to <out_dir>/tb (if tensorboard is installed)
    progress: str = "auto"  # auto (tqdm bar on a terminal, rank 0) | on | off
    resume: str = "auto"  # auto (continue from <out_dir>/last.pt if it exists) | off | PATH to a checkpoint


@dataclass
class Config:
    """One training run. ``role`` is ``teacher`` or ``student``; ``preset`` is informational."""

    role: str = "student"  # teacher (ground truth only) | student (ground truth + distill.terms)
    preset: str = ""  # the preset this came from (names the default output folder)
    data: DataConfig = field(default_factory=DataConfig)
    model: ModelConfig = field(default_factory=ModelConfig)
    distill: DistillConfig = field(default_factory=DistillConfig)
    optim: OptimConfig = field(default_factory=OptimConfig)
    run: RunConfig = field(default_factory=RunConfig)

    # ---- derived values ----------------------------------------------------------------
    @property
    def num_joints(self) -> int:
        """K: the dataset's skeleton's (:mod:`ikd_edu.data.registry`): 16 for MPII, 17 for COCO and the synthetic set."""
        from ikd_edu.data.registry import get_dataset

        return get_dataset(self.data.dataset).num_joints

    @property
    def is_distillation(self) -> bool:
        """True for a student with at least one distillation term (needs a teacher)."""
        return self.role == "student" and bool(self.distill.terms)

    @property
    def trained_model_name(self) -> str:
        return self.model.teacher if self.role == "teacher" else self.model.student

    def variant_name(self) -> str:
        """``teacher``, ``student-labels`` or ``student-logit+feature`` etc. (for folders and tables)."""
        if self.role == "teacher":
            return "teacher"
        return "student-" + ("+".join(self.distill.terms) if self.distill.terms else "labels")


# --------------------------------------------------------------------------------------
# Checked values: choices and ranges
# --------------------------------------------------------------------------------------
CHOICES: dict[str, tuple[str, ...]] = {
    "role": ("teacher", "student"),
    "data.dataset": (),  # the names in ikd_edu/data/registry.py (read when validating)
    "data.target_weight_rule": ("reference", "inside-crop"),
    "data.channel_order": ("rgb", "bgr"),
    "data.pipeline": ("auto", "host", "device"),
    "distill.decay": ("none", "linear", "cosine"),
    "distill.logit_mode": ("mse", "kl"),
    "distill.logit_teacher_weighting": ("all", "target"),
    "distill.feature_mode": ("l2", "attention"),
    "optim.optimizer": ("adam", "adamw", "sgd"),
    "optim.schedule": ("multistep", "onecycle", "cosine", "constant"),
    "run.amp": ("auto", "bf16", "fp16", "off"),
    "run.channels_last": ("auto", "on", "off"),
    "run.decode": ("quarter", "dark", "argmax"),
    "run.progress": ("auto", "on", "off"),
}
POSITIVE = {"optim.lr", "optim.batch_size", "run.eval_batch_size", "data.sigma", "run.log_every", "run.magnitude_ratio"}
NON_NEGATIVE = {
    "data.num_workers", "data.label_subset", "data.val_subset", "optim.weight_decay", "optim.grad_clip",
    "optim.steps", "optim.epochs", "optim.warmup_steps", "run.eval_every", "run.ckpt_every", "run.seed",
    "distill.temperature",
    "run.magnitude_batches", "data.synthetic_images", "data.synthetic_val_images",
}


# --------------------------------------------------------------------------------------
# Type checking / conversion of one value
# --------------------------------------------------------------------------------------
_TYPE_WORDS = {int: "an integer", float: "a float", bool: "a boolean (true/false)", str: "a string"}


def _describe(tp) -> str:
    if tp in _TYPE_WORDS:
        return _TYPE_WORDS[tp]
    origin = typing.get_origin(tp)
    if origin is tuple:
        return f"{len(typing.get_args(tp))} integers like 256x192"
    if origin is list:
        return f"a list of {_describe(typing.get_args(tp)[0]).split(' ', 1)[-1]}s"
    if origin is dict:
        return "a mapping"
    return str(tp)


def _convert(key: str, value: Any, tp) -> Any:
    """Convert ``value`` (from YAML or ``--set``) to type ``tp``; UserError naming ``key`` if it can't."""
    def bad() -> UserError:
        return UserError(f"{key}: expected {_describe(tp)}, got {value!r}")

    origin = typing.get_origin(tp)
    if origin in (typing.Union, types.UnionType):  # Optional[X]
        args = [a for a in typing.get_args(tp) if a is not type(None)]
        if value is None:
            return None
        return _convert(key, value, args[0])
    if tp is bool:
        if isinstance(value, bool):
            return value
        if isinstance(value, str) and value.strip().lower() in ("true", "yes", "on", "1", "false", "no", "off", "0"):
            return value.strip().lower() in ("true", "yes", "on", "1")
        raise bad()
    if tp is int:
        if isinstance(value, bool):
            raise bad()
        if isinstance(value, int):
            return value
        if isinstance(value, float) and value.is_integer():
            return int(value)
        if isinstance(value, str):
            try:
                return int(value.strip().replace("_", ""))
            except ValueError:
                try:
                    f = float(value)
                except ValueError:
                    raise bad() from None
                if f.is_integer():
                    return int(f)
        raise bad()
    if tp is float:
        if isinstance(value, bool):
            raise bad()
        if isinstance(value, (int, float)):
            return float(value)
        if isinstance(value, str):
            try:
                return float(value)  # YAML reads "1e-3" as a string; float() does not
            except ValueError:
                raise bad() from None
        raise bad()
    if tp is str:
        if value is None:
            return ""
        if isinstance(value, bool):  # YAML 1.1 reads on/off/yes/no as booleans
            return "on" if value else "off"
        if isinstance(value, (str, int, float)) and not isinstance(value, bool):
            return str(value)
        raise bad()
    if origin is tuple:
        return _convert_tuple(key, value, tp, bad)
    if origin is list:
        return _convert_list(key, value, tp, bad)
    if origin is dict:
        return _convert_dict(value, bad)
    raise bad()


def _convert_tuple(key: str, value: Any, tp, bad) -> tuple:
    """``"256x192"`` / ``[256, 192]`` -> ``(256, 192)`` (positive integers, as many as ``tp`` has)."""
    n = len(typing.get_args(tp))
    if isinstance(value, str):
        parts = re.split(r"[x,\s]+", value.strip().lower().strip("()[]"))
        parts = [p for p in parts if p]
    elif isinstance(value, (list, tuple)):
        parts = list(value)
    else:
        raise bad()
    if len(parts) != n:
        raise bad()
    try:
        out = tuple(_convert(key, p, int) for p in parts)
    except UserError:
        raise bad() from None
    if min(out) < 1:
        raise UserError(f"{key}: sizes must be positive, got {value!r}")
    return out


def _convert_list(key: str, value: Any, tp, bad) -> list:
    """``"a,b"`` / ``[a, b]`` / ``none`` -> a list of ``tp``'s item type."""
    (item_tp,) = typing.get_args(tp)
    if isinstance(value, str):
        text = value.strip().strip("[]")
        parts = [p.strip() for p in text.split(",") if p.strip()] if text and text.lower() != "none" else []
    elif isinstance(value, (list, tuple)):
        parts = list(value)
    elif value is None:
        parts = []
    else:
        raise bad()
    try:
        return [_convert(key, p, item_tp) for p in parts]
    except UserError:
        raise bad() from None


def _convert_dict(value: Any, bad) -> dict:
    """A mapping, or YAML text of one (``"{widths: [8, 8]}"``); None = empty."""
    if value is None:
        return {}
    if isinstance(value, str):
        import yaml

        try:
            value = yaml.safe_load(value) if value.strip() else {}
        except yaml.YAMLError:
            raise bad() from None
    if not isinstance(value, dict):
        raise bad()
    return {str(k): v for k, v in value.items()}


def _hints(cls) -> dict[str, Any]:
    return typing.get_type_hints(cls)


def _all_keys(cls, prefix: str = "") -> list[str]:
    keys = []
    for f in dataclasses.fields(cls):
        tp = _hints(cls)[f.name]
        if dataclasses.is_dataclass(tp):
            keys += _all_keys(tp, f"{prefix}{f.name}.")
        else:
            keys.append(prefix + f.name)
    return keys


def _unknown_key(key: str) -> UserError:
    close = difflib.get_close_matches(key, _all_keys(Config), n=1, cutoff=0.6)
    hint = f" (did you mean '{close[0]}'?)" if close else "; see ikd_edu/train/config.py for every key"
    return UserError(f"unknown key '{key}'{hint}")


def _set_path(obj: Any, key: str, value: Any) -> None:
    """Set dotted ``key`` (e.g. ``optim.lr``) on the dataclass tree ``obj``, converting the value."""
    parts = key.split(".")
    target = obj
    for i, part in enumerate(parts):
        names = {f.name for f in dataclasses.fields(target)}
        if part not in names:
            raise _unknown_key(key)
        tp = _hints(type(target))[part]
        if i == len(parts) - 1:
            if dataclasses.is_dataclass(tp):
                if not isinstance(value, dict):
                    raise UserError(f"{key}: expected a mapping of {', '.join(f.name for f in dataclasses.fields(tp))}")
                for k, v in value.items():
                    _set_path(obj, f"{key}.{k}", v)
                return
            setattr(target, part, _convert(key, value, tp))
            return
        if not dataclasses.is_dataclass(tp):
            raise _unknown_key(key)
        target = getattr(target, part)


def _flatten(mapping: dict, prefix: str = "") -> list[tuple[str, Any]]:
    items = []
    for k, v in mapping.items():
        key = f"{prefix}{k}"
        # recurse into dicts except where the field itself is a mapping (model.*_options)
        if isinstance(v, dict) and not key.endswith("_options"):
            items += _flatten(v, key + ".")
        else:
            items.append((key, v))
    return items


def get_value(cfg: Config, key: str) -> Any:
    """The value of dotted ``key`` (``"distill.feature_weight"``)."""
    value: Any = cfg
    for part in key.split("."):
        value = getattr(value, part)
    return value


def config_to_dict(cfg: Config) -> dict:
    """Plain nested dict (tuples as lists) - what is written to ``config.yaml``."""
    def plain(x):
        if isinstance(x, dict):
            return {k: plain(v) for k, v in x.items()}
        if isinstance(x, (list, tuple)):
            return [plain(v) for v in x]
        return x

    return plain(dataclasses.asdict(cfg))


def config_from_dict(mapping: dict, where: str = "config") -> Config:
    """Build a Config from a (possibly partial) nested dict; keys and types are checked."""
    if mapping is None:
        mapping = {}
    if not isinstance(mapping, dict):
        raise UserError(f"{where}: expected a mapping of sections (data, model, distill, optim, run)")
    cfg = Config()
    for key, value in _flatten(mapping):
        _set_path(cfg, key, value)
    return cfg


# --------------------------------------------------------------------------------------
# Presets, overrides, validation
# --------------------------------------------------------------------------------------
def list_presets() -> list[str]:
    """Names of the bundled presets (``ikd_edu/presets/*.yaml``)."""
    return sorted(p.stem for p in PRESET_DIR.glob("*.yaml"))


def _read_yaml(path: Path) -> dict:
    import yaml

    try:
        with open(path) as fh:
            data = yaml.safe_load(fh)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f" (line {mark.line + 1})" if mark is not None else ""
        raise UserError(f"{path} is not valid YAML{where}: {getattr(exc, 'problem', exc)}") from None
    return data or {}


def resolve_preset(preset_or_path: str) -> tuple[str, Path]:
    """``"quick"`` -> bundled preset; a path to a ``.yaml`` file -> that file. Returns (name, path)."""
    text = str(preset_or_path)
    path = Path(text)
    if path.suffix in (".yaml", ".yml") or path.is_file():
        if not path.is_file():
            raise UserError(f"config file not found: {path}")
        return path.stem, path
    bundled = PRESET_DIR / f"{text}.yaml"
    if not bundled.is_file():
        raise UserError(f"unknown preset {text!r}; bundled presets: {', '.join(list_presets())} (or give a .yaml path)")
    return text, bundled


def parse_override(text: str) -> tuple[str, Any]:
    """``"optim.lr=1e-3"`` -> ``("optim.lr", "1e-3")``; the value is converted by the field's type."""
    if "=" not in text:
        raise UserError(f"override {text!r} must look like key=value, e.g. optim.lr=1e-3")
    key, raw = text.split("=", 1)
    key = key.strip()
    if not key:
        raise UserError(f"override {text!r} has no key")
    return key, raw.strip()  # the field's type decides how the text is read (see _convert)


def load_config(
    preset_or_path: str | None = "quick",
    overrides: list[str] | None = None,
    role: str | None = None,
    check_files: bool = True,
) -> Config:
    """Preset (or YAML file) + ``key=value`` overrides -> a validated :class:`Config`.

    Args:
        preset_or_path: a bundled preset name (``quick``, ``coco-r50-256x192``,
            ``mpii-r50-256x256``) or a path to a YAML file; None = the dataclass defaults.
        overrides: ``["optim.lr=1e-3", "distill.terms=logit,feature", ...]`` applied in order.
        role: ``"teacher"`` or ``"student"`` (overrides ``role`` from the file).
        check_files: verify that a distillation run's teacher checkpoint exists and fits.

    Raises:
        UserError: one line naming the offending key / file, before anything is trained.
    """
    if preset_or_path is None:
        cfg, name = Config(), ""
    else:
        name, path = resolve_preset(preset_or_path)
        cfg = config_from_dict(_read_yaml(path), where=str(path))
        if not cfg.preset:
            cfg.preset = name
    for text in overrides or []:
        key, value = parse_override(text)
        _set_path(cfg, key, value)
    if role is not None:
        _set_path(cfg, "role", role)
    finalize(cfg)
    validate(cfg, check_files=check_files)
    return cfg


def default_out_root(cfg: Config) -> Path:
    """``runs/<preset>``: the folder the default teacher and student run folders share."""
    return Path("runs") / (cfg.preset or "custom")


def finalize(cfg: Config) -> Config:
    """Fill the "" defaults that depend on other fields (output folder, teacher checkpoint)."""
    if cfg.role == "teacher":
        cfg.distill.terms = []
    terms = []
    for t in cfg.distill.terms:  # normalise: lower case, canonical order, "all"/"ikd" = every term
        t = t.strip().lower()
        if t in ("all", "ikd"):
            terms += list(terms_registry.user_terms())
        elif t in ("none", "labels", ""):
            continue
        else:
            terms.append(t)
    known = terms_registry.user_terms()
    cfg.distill.terms = [t for t in known if t in terms] + [t for t in terms if t not in known]
    if not cfg.run.out_dir:
        cfg.run.out_dir = str(default_out_root(cfg) / cfg.variant_name())
    if not cfg.model.teacher_checkpoint:
        cfg.model.teacher_checkpoint = str(default_out_root(cfg) / "teacher" / "best.pt")
    return cfg


def validate(cfg: Config, check_files: bool = True) -> None:
    """Check choices, ranges and cross-field rules; raise a one-line UserError naming the key."""
    flat = dict(_flatten(config_to_dict(cfg)))
    from ikd_edu.data.registry import dataset_names

    for key, allowed in dict(CHOICES, **{"data.dataset": dataset_names()}).items():
        if flat[key] not in allowed:
            raise UserError(f"{key}: expected one of {', '.join(allowed)}, got {flat[key]!r}")
    for key in POSITIVE:
        if not flat[key] > 0:
            raise UserError(f"{key}: must be > 0, got {flat[key]!r}")
    weights = [t for t in terms_registry.terms() if t.weight_key]
    for key in NON_NEGATIVE | {t.weight_key for t in weights if t.weight_max is None}:
        if flat[key] < 0:
            raise UserError(f"{key}: must be >= 0, got {flat[key]!r}")
    known = terms_registry.user_terms()
    for t in cfg.distill.terms:
        if t not in known:
            raise UserError(f"distill.terms: unknown term {t!r}; choose any of {', '.join(known)} (or none)")
    for t in weights:
        if t.weight_max is not None and not 0.0 <= flat[t.weight_key] <= t.weight_max:
            raise UserError(f"{t.weight_key}: must be in [0, {t.weight_max:g}], got {flat[t.weight_key]}")
    if not 0.0 < cfg.optim.pct_start < 1.0:
        raise UserError(f"optim.pct_start: must be in (0, 1), got {cfg.optim.pct_start}")
    if cfg.optim.steps == 0 and cfg.optim.epochs == 0:
        raise UserError("optim.epochs: set optim.epochs or optim.steps to a positive number")
    if sorted(cfg.optim.milestones) != list(cfg.optim.milestones):
        raise UserError(f"optim.milestones: must be increasing, got {cfg.optim.milestones}")
    from ikd_edu.validate import input_size

    ih, iw = input_size(cfg.data.input_size, "data.input_size")  # multiples of 32, 32..1024 per side
    hh, hw = cfg.data.heatmap_size
    if (ih, iw) != (4 * hh, 4 * hw):
        raise UserError(f"data.heatmap_size: the models output input/4, so {ih}x{iw} needs {ih // 4}x{iw // 4}, "
                        f"got {hh}x{hw}")
    from ikd_edu.models import MODELS, TAP_NAMES

    for key in ("model.teacher", "model.student"):
        if flat[key] not in MODELS:
            raise UserError(f"{key}: unknown model {flat[key]!r}; known models: {', '.join(MODELS)}")
    for key in ("distill.feature_tap", "distill.structure_tap"):
        if flat[key] not in TAP_NAMES:
            raise UserError(f"{key}: unknown tap {flat[key]!r}; choose from {', '.join(TAP_NAMES)}")
    a = cfg.data.augment
    flip_only = not (a.scale_factor > 0 or (a.rotation_prob > 0 and a.rotation_factor > 0) or a.half_body_prob > 0)
    sets = flip_only_overrides()
    set_flip_only = ", ".join(sets[:-1]) + " and " + sets[-1]
    if cfg.is_distillation and cfg.distill.teacher_cache and not flip_only:
        raise UserError(f"distill.teacher_cache: cached teacher outputs only fit flip-only augmentation; set "
                        f"{set_flip_only}, or distill.teacher_cache=false: on-the-fly distillation (the teacher "
                        "run on every batch) is the exact path for the paper's recipe with scale/rotation augmentation")
    if cfg.data.cache_crops and not flip_only:
        raise UserError(f"data.cache_crops: cached crops only fit flip-only augmentation; set {set_flip_only}, "
                        "or data.cache_crops=false")
    if check_files and cfg.is_distillation:
        check_teacher_checkpoint(cfg)


def check_teacher_checkpoint(cfg: Config) -> None:
    """A distillation run needs a teacher checkpoint that exists and has the student's K joints."""
    path = Path(cfg.model.teacher_checkpoint)
    how = f"ikd-edu train teacher --preset {cfg.preset or 'PRESET'}"
    if not path.is_file():
        raise UserError(
            f"model.teacher_checkpoint: teacher checkpoint {path} not found; distillation "
            f"({'+'.join(cfg.distill.terms)}) needs a trained teacher: run `{how}` first, "
            "or pass --teacher-ckpt PATH (or --set model.teacher_checkpoint=PATH)"
        )
    from ikd_edu.io import load_torch
    from ikd_edu.models.checkpoints import checkpoint_channel_order, extract_state_dict

    raw = load_torch(path)
    order = checkpoint_channel_order(raw, path)
    if order != cfg.data.channel_order:  # teacher and student see the same batch
        raise UserError(f"model.teacher_checkpoint: the teacher in {path} expects {order.upper()} input but "
                        f"data.channel_order={cfg.data.channel_order}; set data.channel_order={order} "
                        "(the student then learns on the same input)")
    state = extract_state_dict(raw)
    final = state.get("final_layer.weight")
    if final is None:
        raise UserError(f"model.teacher_checkpoint: {path} has no final_layer.weight; is it a pose model checkpoint?")
    teacher_k = int(final.shape[0])
    if teacher_k != cfg.num_joints:
        raise UserError(
            f"model.teacher_checkpoint: the teacher in {path} predicts {teacher_k} joints but the student "
            f"({cfg.data.dataset}) needs {cfg.num_joints}; distil from a teacher trained on the same dataset"
        )


def save_config(cfg: Config, path: str | Path) -> None:
    """Write the config as YAML atomically (``config.yaml`` in the run folder)."""
    import yaml

    from ikd_edu.io import atomic_write

    with atomic_write(path) as fh:
        yaml.safe_dump(config_to_dict(cfg), fh, sort_keys=False)


def format_config(cfg: Config) -> str:
    """The config as YAML text (for printing)."""
    import yaml

    return yaml.safe_dump(config_to_dict(cfg), sort_keys=False)
