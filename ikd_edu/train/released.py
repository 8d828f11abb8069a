"""The released quick teacher: a converged ``quick-teacher`` shipped with the package, as a model zoo ships weights.

Two files in ``ikd_edu/weights/``:

* ``quick-teacher.pt`` - float16 weights plus the run's config, summary and curves
  (``torch.load(..., weights_only=True)``; 7.8 MB);
* ``quick-teacher.json`` - its **card**: the file's sha256 and size, the recipe (model,
  input size, schedule, augmentation), the synthetic generator version, seed and image
  counts with the sha256 of the annotation files it was trained on, the AP curve and the
  final AP on the 500 validation images.

:func:`verify` checks the sha256 against the card before anything is loaded. The quickstart
installs the released teacher (:func:`install`) only where its recipe and data match the
card, and re-evaluates it there; ``ikd-edu quickstart --train-teacher`` trains it from the
recipe instead and prints the AP difference from the card (:func:`compare_with_card`).
The course uses it as its teacher "as you would load released weights"
(:func:`ikd_edu.course.teacher`). Re-create both files from a finished teacher run with
:func:`export_release` - only when the recipe or the generator changes.
"""
from __future__ import annotations

import hashlib
import os
from pathlib import Path
from typing import Callable

from ikd_edu.errors import UserError

WEIGHTS_DIR = Path(__file__).resolve().parent.parent / "weights"
PACK_FORMAT = "ikd-edu-shipped-teacher/1"
CARD_FORMAT = "ikd-edu-model-card/1"
#: the one released model
QUICK_TEACHER = "quick-teacher"
#: the AP (0-1) a re-evaluation may differ from the card by (0.3 AP x 100) before it is not used
AP_TOLERANCE = 0.003


def weights_path(name: str = QUICK_TEACHER) -> Path:
    return WEIGHTS_DIR / f"{name}.pt"


def card_path(name: str = QUICK_TEACHER) -> Path:
    return WEIGHTS_DIR / f"{name}.json"


def sha256_file(path: str | os.PathLike) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def load_card(name: str = QUICK_TEACHER) -> dict:
    """The model card (a dict); a missing or malformed card is a one-line :class:`UserError`."""
    from ikd_edu.io import read_json

    card = read_json(card_path(name), f"model card of the released {name}")
    if not isinstance(card, dict) or card.get("format") != CARD_FORMAT:
        raise UserError(f"{card_path(name)}: not an {CARD_FORMAT} card; restore it with "
                        f"`git checkout -- {card_path(name).relative_to(WEIGHTS_DIR.parent.parent)}`")
    return card


def verify(name: str = QUICK_TEACHER) -> Path:
    """The weights file after checking its size and sha256 against the card (else a :class:`UserError`)."""
    card = load_card(name)
    path = weights_path(name)
    restore = f"restore it with `git checkout -- ikd_edu/weights/{path.name}` (or reinstall ikd-edu)"
    if not path.is_file():
        raise UserError(f"released {name}: {path} is missing; {restore}")
    size = path.stat().st_size
    if size != card["bytes"] or sha256_file(path) != card["sha256"]:
        hint = " (a git-lfs pointer or a truncated download?)" if size < 4096 or size != card["bytes"] else ""
        raise UserError(f"released {name}: {path} ({size:,} bytes) does not match its card's sha256 "
                        f"{card['sha256'][:12]}...{hint}; {restore}")
    return path


def load_pack(name: str = QUICK_TEACHER) -> dict:
    """The verified weights pack: ``model`` (float16 state dict), ``config``, ``summary``, ``files``, ``data``."""
    from ikd_edu.io import load_torch

    pack = load_torch(verify(name))
    if not isinstance(pack, dict) or pack.get("format") != PACK_FORMAT:
        raise UserError(f"released {name}: {weights_path(name)} is not an {PACK_FORMAT} file")
    return pack


def data_fingerprint(data_root: str | os.PathLike) -> dict[str, str]:
    """sha256 of a synthetic set's train and val annotation files (the generator is byte-deterministic)."""
    out = {}
    for split in ("train", "val"):
        path = Path(data_root) / "annotations" / f"person_keypoints_{split}.json"
        out[split] = sha256_file(path) if path.is_file() else ""
    return out


def recipe_of(cfg) -> dict:
    """What a teacher's weights depend on besides the data: model, sizes, optimisation, augmentation."""
    import dataclasses

    return {
        "model": cfg.model.teacher,
        "input_size": list(cfg.data.input_size),
        "heatmap_size": list(cfg.data.heatmap_size),
        "sigma": cfg.data.sigma,
        "optim": dataclasses.asdict(cfg.optim),
        "augment": dataclasses.asdict(cfg.data.augment),
    }


def _jsonable(obj):
    import json

    return json.loads(json.dumps(obj))


def card_mismatch(card: dict, cfg, data_root: str | os.PathLike | None) -> list[str]:
    """What differs between the card and the teacher run ``cfg`` would train on ``data_root`` (empty: none)."""
    from ikd_edu.data.synthetic import GENERATOR_VERSION

    want, have = card["recipe"], _jsonable(recipe_of(cfg))
    out = [key for key in want if want[key] != have.get(key)]
    syn = card["synthetic"]
    if syn["generator_version"] != GENERATOR_VERSION:
        out.append(f"synthetic generator version ({syn['generator_version']} on the card, {GENERATOR_VERSION} here)")
    if data_root is not None and data_fingerprint(data_root) != syn["annotations_sha256"]:
        out.append("training data (annotation sha256)")
    return out


def compare_with_card(ap: float, card: dict, where: str = "here") -> str:
    """One line: this AP next to the card's final AP, and the difference in AP x 100."""
    want = float(card["final"]["AP"])
    return f"AP {100 * ap:.1f} {where} vs {100 * want:.1f} on the card ({100 * (ap - want):+.1f} AP)"


def compare_curves(curve, card: dict, tol: float = 5e-6) -> str:
    """One line: where an AP curve ``[(step, AP), ...]`` trained from the recipe leaves the card's.

    Training is deterministic on one machine (a second run repeats every evaluation to the
    last digit), but CPU models (and thread counts) round differently: then the curves part
    at the first evaluation and the final AP lands about 1 AP either side (benchmarks/README.md).
    """
    theirs = {int(st): float(ap) for st, ap in card.get("ap_curve", [])}
    shared = [(int(st), float(ap)) for st, ap in curve if int(st) in theirs]
    if not shared:
        return "no evaluation step in common with the card's AP curve"
    for step, ap in shared:
        if abs(ap - theirs[step]) > tol:
            first = "from the first evaluation" if step == shared[0][0] else "first"
            return (f"the AP curves part {first} at step {step} ({100 * ap:.1f} here vs {100 * theirs[step]:.1f} on "
                    "the card): this machine's floating-point rounding differs from the one that trained the card "
                    "(another CPU model or thread count), so the runs are not the same run; the recipe repeats a "
                    "run exactly only on one machine")
    return f"the AP curve equals the card's at all {len(shared)} common evaluations: the same run, repeated"


def install(cfg, data_root: str | os.PathLike | None, out_dir: str | os.PathLike | None = None,
            check: bool = True, say: Callable[[str], None] = print, name: str = QUICK_TEACHER) -> dict | None:
    """Put the released teacher into ``out_dir`` (default ``cfg.run.out_dir``) as a finished run.

    Used only where it is the teacher ``cfg`` would train on ``data_root``: same recipe
    (:func:`recipe_of`), same generator version and byte-identical annotations
    (``data_root=None`` skips the data check: a course set from the same generator).
    Writes ``best.pt`` (float32), ``config.yaml``, ``eval.csv``, ``metrics.csv`` and
    ``summary.json``. With ``check`` it is evaluated on ``cfg``'s validation set; where
    ``data_root`` is given, an AP more than :data:`AP_TOLERANCE` from the card's means it
    is not used. Returns the run summary (``summary['final']`` = the AP measured here), or
    None after saying why (then train the teacher instead).
    """
    from ikd_edu.io import atomic_write, save_torch, write_json
    from ikd_edu.train.config import config_from_dict, save_config
    from ikd_edu.train.engine import CHECKPOINT_FORMAT, evaluate_checkpoint

    try:
        card = load_card(name)
        mismatch = card_mismatch(card, cfg, data_root)
        pack = None if mismatch else load_pack(name)
    except UserError as exc:
        say(f"      released {name}: {exc}; training instead")
        return None
    if mismatch:
        say(f"      released {name}: not used, its {' / '.join(mismatch)} differ from this run's; training instead")
        return None
    out_dir = Path(out_dir or cfg.run.out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    summary = dict(pack["summary"])
    save_torch(out_dir / "best.pt", {
        "format": CHECKPOINT_FORMAT,
        "model": {k: (v.float() if v.is_floating_point() else v) for k, v in pack["model"].items()},
        "distill": {}, "model_name": pack.get("model_name", ""),
        "position": {"epoch": 0, "batch": 0, "step": int(summary["steps"])},
        "config": pack["config"], "best": summary.get("best", {}), "metrics": summary.get("final", {}),
        "timing": {k: summary.get(k, 0.0) for k in ("train_s", "eval_s", "teacher_cache_s")},
    })
    save_config(config_from_dict(pack["config"]), out_dir / "config.yaml")
    for file_name, text in pack.get("files", {}).items():
        with atomic_write(out_dir / file_name) as fh:
            fh.write(text)
    summary.update(out_dir=str(out_dir), released=str(weights_path(name)), card_AP=float(card["final"]["AP"]))
    if check:
        eval_cfg = cfg
        if out_dir != Path(cfg.run.out_dir):
            import copy

            eval_cfg = copy.deepcopy(cfg)
            eval_cfg.run.out_dir = str(out_dir)
        got = evaluate_checkpoint(eval_cfg, out_dir / "best.pt")
        if data_root is not None and not abs(float(got["AP"]) - float(card["final"]["AP"])) <= AP_TOLERANCE:
            (out_dir / "best.pt").unlink()
            say(f"      released {name}: {compare_with_card(float(got['AP']), card)}, more than "
                f"{100 * AP_TOLERANCE:.1f} apart (other images or library versions?); not used, training instead")
            return None
        summary["final"] = got
        summary["final_checked"] = True
    write_json(out_dir / "summary.json", summary)
    return summary


def export_release(run_dir: str | os.PathLike, data_root: str | os.PathLike, recipe_note: str,
                   name: str = QUICK_TEACHER, dest_dir: str | os.PathLike = WEIGHTS_DIR) -> tuple[Path, Path]:
    """Pack a finished teacher run as the released ``name``: ``<name>.pt`` (float16) and its card ``<name>.json``.

    ``run_dir`` is the teacher's run folder (``DIR/teacher`` of a quickstart); ``data_root``
    the synthetic set it was trained on; ``recipe_note`` one line on how it was trained.
    """
    import json

    import torch

    from ikd_edu.data.synthetic import GENERATOR_VERSION
    from ikd_edu.io import load_torch, save_torch, write_json
    from ikd_edu.train.config import config_from_dict

    run_dir, dest_dir = Path(run_dir), Path(dest_dir)
    summary = json.loads((run_dir / "summary.json").read_text())
    if not summary.get("final"):
        raise UserError(f"{run_dir} has no finished teacher run (summary.json without a final evaluation)")
    ckpt = load_torch(run_dir / "best.pt")
    cfg = config_from_dict(ckpt["config"])
    state = {k: (v.half() if v.is_floating_point() else v) for k, v in ckpt["model"].items()}
    summary = {k: v for k, v in summary.items() if k not in ("paths", "out_dir")}
    files = {f: (run_dir / f).read_text() for f in ("eval.csv", "metrics.csv") if (run_dir / f).is_file()}
    pt = dest_dir / f"{name}.pt"
    save_torch(pt, {"format": PACK_FORMAT, "model": state, "model_name": ckpt.get("model_name", ""),
                    "config": ckpt["config"], "summary": summary, "files": files,
                    "data": data_fingerprint(data_root), "torch": str(torch.__version__)})
    card = make_card(pt, cfg, summary, files.get("eval.csv", ""), data_root, recipe_note, GENERATOR_VERSION,
                     str(torch.__version__))
    write_json(dest_dir / f"{name}.json", card)
    return pt, dest_dir / f"{name}.json"


def make_card(pt: Path, cfg, summary: dict, eval_csv: str, data_root, recipe_note: str, generator_version: int,
              torch_version: str = "") -> dict:
    """The card of a weights file (see the module docstring)."""
    import csv
    import io

    import json

    curve = [[int(float(r["step"])), round(float(r["AP"]), 6)] for r in csv.DictReader(io.StringIO(eval_csv))
             if r.get("AP")]
    meta = json.loads((Path(data_root) / "synth_meta.json").read_text())
    return {
        "format": CARD_FORMAT,
        "name": pt.stem,
        "file": pt.name,
        "bytes": pt.stat().st_size,
        "sha256": sha256_file(pt),
        "dtype": "float16",
        "recipe_note": recipe_note,
        "recipe": _jsonable(recipe_of(cfg)),
        "synthetic": {"generator_version": generator_version, "seed": meta["seed"],
                      "train_images": meta["num_images"]["train"], "val_images": meta["num_images"]["val"],
                      "image_size": meta["image_size"], "annotations_sha256": data_fingerprint(data_root)},
        "steps": int(summary["steps"]),
        "train_s": summary.get("train_s"),
        "trained_with": {"torch": torch_version},
        "ap_curve": curve,
        "final": {k: round(float(v), 6) for k, v in summary["final"].items()},
        "evaluated_on": "the synthetic set's validation split (flip test, GT boxes, pycocotools COCOeval)",
    }
