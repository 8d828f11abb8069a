"""Make the README figures (teacher | IKD student heatmaps, affinity, joint relations) -> docs/images/.

Usage:
    python scripts/make_readme_figures.py [--out-dir docs/images] [--sample N] [--joint left_wrist]
                                          [--affinity-tap deconv2] [--full]
                                          [--teacher CKPT --student CKPT [--teacher-model M --student-model M]]

The models are the course's (``ikd_edu.course``), in quick mode unless ``--full``:
the teacher is the finished quickstart teacher when ``runs/quickstart`` has one (README
command 1; ``$IKD_QUICKSTART_DIR``), else the course's own (``runs/course``,
``$IKD_COURSE_DIR``); the student is the course's IKD student (logit + feature + structure).
Finished runs are loaded in seconds; missing ones are trained first, offline, on the
course's synthetic set (quick mode on 2 CPU cores: ~2 min for the teacher, ~30 s for the
student). ``--teacher``/``--student`` use given ``best.pt`` files instead (the model name is
read from the checkpoint, or set with ``--teacher-model``/``--student-model``).

The figures show one held-out validation crop (never trained on), the one with the most
visible joints unless ``--sample``:

* ``teacher_student_heatmaps.png`` - teacher | student | student - teacher, all joints (max);
* ``teacher_student_joint.png``   - the same for one joint (``--joint``, default left wrist);
* ``affinity_teacher_student.png`` - affinity of a query cell on the person to every cell
  (``--affinity-tap`` features, default ``deconv2``; :func:`ikd_edu.distill.structure.affinity_at`);
* ``joint_relations.png``         - the K x K joint relations of teacher and student.

Each PNG is written atomically (:func:`ikd_edu.io.atomic_write`) and kept small (< 200 KB).
"""
from __future__ import annotations

import argparse
import io
import os
import sys
import time
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import torch  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
from ikd_edu import course  # noqa: E402
from ikd_edu.distill.structure import pooled_grid_size  # noqa: E402
from ikd_edu.io import atomic_write  # noqa: E402
from ikd_edu.models import build_model  # noqa: E402
from ikd_edu.models.checkpoints import load_pose_checkpoint  # noqa: E402
from ikd_edu.skeleton import COCO  # noqa: E402
from ikd_edu.viz import plot_affinity, plot_joint_relations, plot_teacher_student  # noqa: E402

IKD_TERMS = ["logit", "feature", "structure"]
MAX_BYTES = 200_000


def load_checkpoint_model(path: str, name: str | None, default: str):
    ckpt = torch.load(path, map_location="cpu", weights_only=True)
    name = name or (ckpt.get("model_name") if isinstance(ckpt, dict) else None) or default
    model = build_model(name)
    load_pose_checkpoint(model, ckpt)
    print(f"loaded {name} from {path}")
    return model.eval()


def pick_query(target: torch.Tensor, weight: torch.Tensor, grid: tuple[int, int]) -> tuple[int, int]:
    """A pooled-grid cell on the person: the left wrist's GT peak (else another labelled joint's)."""
    h, w = target.shape[-2:]
    for k in [9, 7, 10, 8, 13, 14, 0] + list(range(COCO.num_joints)):
        if weight[k] > 0 and target[k].max() > 0:
            y, x = divmod(int(target[k].argmax()), w)
            return min(y * grid[0] // h, grid[0] - 1), min(x * grid[1] // w, grid[1] - 1)
    return grid[0] // 2, grid[1] // 2


def png_bytes(fig, dpi: int) -> bytes:
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=dpi, bbox_inches="tight", pad_inches=0.05)
    return buf.getvalue()


def save(fig, path: Path, dpi: int = 110) -> Path:
    """Write ``fig`` atomically as PNG, lowering the resolution until it is under MAX_BYTES."""
    data = png_bytes(fig, dpi)
    while len(data) > MAX_BYTES and dpi > 60:
        dpi -= 10
        data = png_bytes(fig, dpi)
    with atomic_write(path, "wb") as fh:
        fh.write(data)
    print(f"wrote {path} ({len(data) / 1000:.0f} KB, {dpi} dpi)")
    return path


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out-dir", default=str(ROOT / "docs" / "images"))
    parser.add_argument("--full", action="store_true",
                        help="use the course's full mode (needs a CUDA GPU) instead of quick mode")
    parser.add_argument("--teacher", default=None, help="teacher checkpoint (default: the course's teacher)")
    parser.add_argument("--student", default=None, help="student checkpoint (default: the course's IKD student)")
    parser.add_argument("--teacher-model", default=None, help="model name for --teacher (default: from the checkpoint)")
    parser.add_argument("--student-model", default=None, help="model name for --student (default: from the checkpoint)")
    parser.add_argument("--sample", type=int, default=None, help="validation crop to show (default: most visible joints)")
    parser.add_argument("--crops", type=int, default=16, help="validation crops to choose from (default 16)")
    parser.add_argument("--joint", default="left_wrist", help="joint of the single-joint figure")
    parser.add_argument("--affinity-tap", default="deconv2",
                        help="feature tap of the affinity figure (default deconv2: a 16x12 grid at 128x96 input; "
                             "the quick preset's structure term uses layer4, a coarse 4x3 grid)")
    args = parser.parse_args(argv)
    if not args.full:
        os.environ[course.QUICK_ENV] = "1"
    t_start = time.time()
    mode = course.setup()

    if args.teacher:
        teacher = load_checkpoint_model(args.teacher, args.teacher_model, "quick-teacher")
    else:
        with course.expect("the course teacher (loaded if it exists)", cpu="~1 s, ~2 min to train", gpu="~30 s"):
            teacher, _ = course.teacher(mode)
    if args.student:
        student = load_checkpoint_model(args.student, args.student_model, "quick-student")
    else:
        with course.expect("the course's IKD student (loaded if it exists)", cpu="~1 s, ~30 s to train", gpu="~15 s"):
            student, _ = course.student(mode, IKD_TERMS)
    teacher, student = teacher.cpu().eval(), student.cpu().eval()

    val = course.val_batch(mode, count=args.crops)
    if args.sample is None:
        index = int(torch.argmax((val["joints"][:, :, 2] > 1).sum(dim=1)))  # most visible joints (ties: first)
    elif 0 <= args.sample < args.crops:
        index = args.sample
    else:
        parser.error(f"--sample must be in 0..{args.crops - 1} (or raise --crops)")
    x = val["image"][index: index + 1]
    tap = args.affinity_tap
    with torch.no_grad():
        t_taps = teacher.forward_taps(x, [tap, "heatmaps"])
        s_taps = student.forward_taps(x, [tap, "heatmaps"])
    t_hm, s_hm = t_taps["heatmaps"][0], s_taps["heatmaps"][0]

    out = Path(args.out_dir)
    fig = plot_teacher_student(x[0], t_hm, s_hm, joint=None, titles=("teacher", "IKD student"))
    fig.suptitle("heatmaps on a held-out crop: teacher | IKD student | student - teacher (all joints, max)", fontsize=9)
    save(fig, out / "teacher_student_heatmaps.png")
    fig = plot_teacher_student(x[0], t_hm, s_hm, joint=args.joint, titles=("teacher", "IKD student"))
    save(fig, out / "teacher_student_joint.png")

    grid = pooled_grid_size(t_taps[tap].shape[-2:], "auto")
    query = pick_query(val["heatmaps"][index], val["target_weight"][index], grid)
    fig = plot_affinity(x[0], t_taps[tap][0], s_taps[tap][0], query)
    fig.suptitle(f"pairwise affinity ({tap} features, cosine similarity) of the query cell to every cell", fontsize=9)
    save(fig, out / "affinity_teacher_student.png")
    save(plot_joint_relations(t_hm, s_hm), out / "joint_relations.png")
    print(f"done in {time.time() - t_start:.0f} s ({mode.name} mode, validation crop {index})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
