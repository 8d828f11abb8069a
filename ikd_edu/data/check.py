"""``ikd-edu data check``: is this COCO keypoint file (and its images) usable for training?

It runs the very record filter the dataset uses (:func:`ikd_edu.data.coco.parse_coco_keypoints`),
so what it reports as skipped is exactly what training skips, and it opens the images
(fully decoding them by default, like training will) to find missing or corrupt files.

The image rules are training's rules (:func:`ikd_edu.data.images.load_rgb`): every image a
usable person needs must exist, decode and stay under the pixel limit (50 megapixels by
default; ``--max-pixels N`` or ``IKD_MAX_IMAGE_PIXELS``), and no ``file_name`` may leave the
image folder (absolute or ``..``: skipped, never opened). ``--quick`` decodes a sample of
``QUICK_SAMPLE`` images only, and says so.

Exit status: 0 usable (perhaps with skipped records); 1 usable annotations, but images that
training would stop at (missing, corrupt, over the pixel limit); 2 not usable at all (not
JSON, not a COCO keypoints file, empty, no person with a labelled joint) with a one-line message.
"""
from __future__ import annotations

import json
import os
import sys
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from ikd_edu.data.coco import MAX_EXAMPLES, coco_not_found_message, load_coco_json, parse_coco_keypoints
from ikd_edu.data.images import MAX_PIXELS_ENV, load_rgb, read_image_size
from ikd_edu.errors import UserError
from ikd_edu.skeleton import COCO, Skeleton


QUICK_SAMPLE = 200  # images decoded by `data check --quick`
TOO_LARGE = "image over the pixel limit"
#: image-level problems: the annotation is fine but training would stop at the image
IMAGE_PROBLEMS = ("image file missing", "image file corrupt or unreadable", "image size differs from the annotation file",
                  TOO_LARGE)


@dataclass
class CheckReport:
    """What :func:`check_coco_keypoints` found.

    Attributes:
        n_images: well-formed image entries. n_persons: annotation entries.
        n_usable_persons: persons training would use (usable record *and* a readable image).
        labelled_per_joint / visible_per_joint: ``(K,)`` usable persons with ``v > 0`` / ``v == 2``
            (the reference trains on ``v > 0``).
        problems: reason -> count of malformed records or files, all skipped.
        examples: reason -> up to 3 examples.
        skipped: reason -> count left out by convention (crowd, not a person, no labelled joint).
        notes: things that are fine but worth knowing (e.g. grey/RGBA images, loaded as RGB).
        fatal: why the file is not usable at all, or None.
    """

    ann_file: str
    joint_names: list[str]
    n_images: int = 0
    n_persons: int = 0
    n_usable_persons: int = 0
    labelled_per_joint: np.ndarray = field(default_factory=lambda: np.zeros(0, np.int64))
    visible_per_joint: np.ndarray = field(default_factory=lambda: np.zeros(0, np.int64))
    problems: Counter = field(default_factory=Counter)
    examples: dict[str, list[str]] = field(default_factory=dict)
    skipped: Counter = field(default_factory=Counter)
    notes: list[str] = field(default_factory=list)
    fatal: str | None = None

    @property
    def ok(self) -> bool:
        return self.fatal is None

    @property
    def image_problems(self) -> int:
        """Persons whose image training would stop at (missing, corrupt, wrong size, too large)."""
        return sum(self.problems.get(r, 0) for r in IMAGE_PROBLEMS)

    def to_dict(self) -> dict:
        return {
            "ann_file": self.ann_file,
            "ok": self.ok,
            "fatal": self.fatal,
            "n_images": self.n_images,
            "n_persons": self.n_persons,
            "n_usable_persons": self.n_usable_persons,
            "labelled_per_joint": dict(zip(self.joint_names, map(int, self.labelled_per_joint))),
            "visible_per_joint": dict(zip(self.joint_names, map(int, self.visible_per_joint))),
            "problems": dict(self.problems),
            "examples": self.examples,
            "skipped": dict(self.skipped),
            "notes": self.notes,
        }

    def format_table(self) -> str:
        """Human-readable summary."""
        lines = [
            f"annotations: {self.ann_file}",
            f"images: {self.n_images}   persons: {self.n_persons}   usable persons: {self.n_usable_persons}",
            "",
            f"{'joint':<16} {'labelled':>9} {'visible':>9}",
        ]
        for name, lab, vis in zip(self.joint_names, self.labelled_per_joint, self.visible_per_joint):
            lines.append(f"{name:<16} {int(lab):>9} {int(vis):>9}")
        lines.append("")
        if self.problems:
            lines.append("problems found (records skipped):")
            for reason, n in self.problems.most_common():
                ex = "; ".join(self.examples.get(reason, []))
                lines.append(f"  {n:>7}  {reason}" + (f"   e.g. {ex}" if ex else ""))
        else:
            lines.append("problems found: none")
        if self.skipped:
            lines.append("skipped by convention (not errors):")
            for reason, n in self.skipped.most_common():
                lines.append(f"  {n:>7}  {reason}")
        for note in self.notes:
            lines.append(f"note: {note}")
        return "\n".join(lines)


def check_coco_keypoints(
    ann_file,
    image_dir=None,
    verify_images: bool | str = True,
    skeleton: Skeleton = COCO,
    progress: bool = False,
    sample: int | None = None,
) -> CheckReport:
    """Validate a COCO keypoint annotation file and (optionally) its images.

    Args:
        ann_file: ``person_keypoints_*.json``.
        image_dir: image folder; None checks the annotations only.
        verify_images: ``True``/``"decode"`` fully decodes every image used by a usable person
            (finds truncated files; the slowest), ``"header"`` reads headers only,
            ``False`` only checks that the files exist.
        skeleton: expected joint layout.
        progress: print a progress line to stderr while decoding.
        sample: look at only this many images (evenly spread, a note says so); None: all.

    Returns:
        :class:`CheckReport`; ``report.fatal`` says why the file cannot be used, if so.

    Raises:
        UserError: the file is not usable at all (missing, not JSON, not COCO keypoints, empty).
    """
    ann_file = Path(ann_file)
    data = load_coco_json(ann_file)
    persons = parse_coco_keypoints(data, skeleton.num_joints, ann_file)
    del data
    k = skeleton.num_joints
    report = CheckReport(ann_file=str(ann_file), joint_names=list(skeleton.joints))
    report.n_images = len(persons.images)
    report.n_persons = persons.n_annotations
    report.problems = Counter(persons.problems)
    report.examples = {r: list(e) for r, e in persons.examples.items()}
    report.skipped = Counter(persons.skipped)
    usable = np.ones(len(persons.image_ids), dtype=bool)

    if image_dir is not None:
        image_dir = Path(image_dir)
        if not image_dir.is_dir():
            raise UserError(coco_not_found_message(image_dir, "image folder"))
        mode = "decode" if verify_images is True else (verify_images or "exists")
        bad_images: set[int] = set()
        odd_modes: Counter = Counter()
        used = np.unique(persons.image_ids)
        if sample is not None and len(used) > sample:
            report.notes.append(f"quick check: looked at {sample} of {len(used)} images (an even sample); "
                                "run without --quick to decode every image")
            used = used[np.linspace(0, len(used) - 1, sample).round().astype(np.int64)]
        for n, image_id in enumerate(used):
            info = persons.images[int(image_id)]
            path = image_dir / info["file_name"]
            reason = None
            try:
                if not path.is_file():
                    reason = "image file missing"
                elif mode == "decode":
                    arr = load_rgb(path)
                    h, w = arr.shape[:2]
                    if (h, w) != (int(info["height"]), int(info["width"])):
                        reason = "image size differs from the annotation file"
                elif mode == "header":
                    h, w = read_image_size(path)
                    if (h, w) != (int(info["height"]), int(info["width"])):
                        reason = "image size differs from the annotation file"
                if mode in ("decode", "header") and reason is None:
                    odd_modes.update([_pil_mode(path)])
            except UserError as exc:
                reason = TOO_LARGE if MAX_PIXELS_ENV in str(exc) else "image file corrupt or unreadable"
            if reason is not None:
                bad_images.add(int(image_id))
                ex = report.examples.setdefault(reason, [])
                n_persons = int((persons.image_ids == image_id).sum())
                report.problems[reason] += n_persons
                if len(ex) < MAX_EXAMPLES:
                    ex.append(f"{path} ({n_persons} person(s))")
            if progress and n % 500 == 499:
                print(f"\rchecked {n + 1}/{len(used)} images", end="", file=sys.stderr, flush=True)
        if progress and len(used) >= 500:
            print(file=sys.stderr)
        if bad_images:
            usable &= ~np.isin(persons.image_ids, np.fromiter(bad_images, np.int64))
        other = {m: c for m, c in odd_modes.items() if m not in ("RGB", "")}
        if other:
            desc = ", ".join(f"{c} {m}" for m, c in sorted(other.items()))
            report.notes.append(f"images that are not RGB ({desc}) are fine: they are loaded as RGB")

    joints = persons.joints[usable]
    report.n_usable_persons = int(usable.sum())
    report.labelled_per_joint = (joints[:, :, 2] > 0).sum(axis=0).astype(np.int64) if len(joints) else np.zeros(k, np.int64)
    report.visible_per_joint = (joints[:, :, 2] == 2).sum(axis=0).astype(np.int64) if len(joints) else np.zeros(k, np.int64)
    if report.n_usable_persons == 0:
        why = ", ".join(f"{n} {r}" for r, n in (report.problems + report.skipped).most_common(3)) or "nothing to read"
        report.fatal = f"{ann_file}: no usable person (none with a labelled joint, a valid box and a readable image); {why}"
    return report


def _pil_mode(path: Path) -> str:
    from PIL import Image

    try:
        with Image.open(path) as im:
            return im.mode
    except Exception:  # already reported by the decode step
        return ""


def add_cli_arguments(parser) -> None:
    parser.add_argument("annotations", help="COCO person_keypoints_*.json file")
    parser.add_argument("--images", metavar="DIR", help="image folder (omit to check the annotations only)")
    parser.add_argument(
        "--verify", choices=("decode", "header", "exists"), default="decode",
        help="how hard to look at each image: fully decode (default; finds truncated files), "
        "read the header only, or only check the file exists",
    )
    parser.add_argument("--quick", action="store_true",
                        help=f"look at an even sample of {QUICK_SAMPLE} images only (the report says so)")
    parser.add_argument("--max-pixels", type=int, default=None, metavar="N",
                        help=f"refuse images over N pixels (default 50000000, or ${MAX_PIXELS_ENV}); "
                             "training uses the same limit through the variable")
    parser.add_argument("--skeleton", default="coco", help="joint layout: coco (17) or mpii (16)")
    parser.add_argument("--json", action="store_true", help="print the report as JSON")


def cli_main(args) -> int:
    from ikd_edu.skeleton import get_skeleton

    skeleton = get_skeleton(args.skeleton)
    verify = {"decode": "decode", "header": "header", "exists": False}[args.verify]
    old_limit = os.environ.get(MAX_PIXELS_ENV)
    if args.max_pixels is not None:
        if args.max_pixels < 1:
            raise UserError(f"--max-pixels must be a positive number of pixels, got {args.max_pixels}")
        os.environ[MAX_PIXELS_ENV] = str(args.max_pixels)
    try:
        report = check_coco_keypoints(
            args.annotations, args.images, verify_images=verify, skeleton=skeleton, progress=sys.stderr.isatty(),
            sample=QUICK_SAMPLE if args.quick else None,
        )
    finally:  # the limit is this command's, not the process's
        if old_limit is None:
            os.environ.pop(MAX_PIXELS_ENV, None)
        else:
            os.environ[MAX_PIXELS_ENV] = old_limit
    if args.json:
        print(json.dumps(report.to_dict(), indent=2))
    else:
        print(report.format_table())
    if report.fatal:
        print(f"ikd-edu: error: {report.fatal}", file=sys.stderr)
        return 2
    if report.image_problems:
        reasons = [r for r in IMAGE_PROBLEMS if report.problems.get(r)]
        example = next((e for r in reasons for e in report.examples.get(r, [])), "")
        print(f"ikd-edu: error: {report.image_problems} person(s) are on images training would stop at "
              f"({', '.join(reasons)}), e.g. {example}; fix or remove those images or their annotations",
              file=sys.stderr)
        return 1
    return 0
