"""Draw a grid of synthetic samples with their skeletons -> docs/images/synthetic_samples.png.

Usage: python scripts/make_synthetic_figure.py [--root DIR] [--seed 0] [--rows 3 --cols 3] [--no-raw] [--out PNG]

Each sample is shown twice: the training image as written to disk (JPEG), and the same
image with the COCO skeleton on top: left joints/limbs blue, right orange, centre green (``ikd_edu.skeleton`` colours);
visible joints (v=2) filled dots, occluded joints (v=1) hollow circles, unlabelled joints
(v=0) not drawn, and the GT box dashed. Without ``--root`` a small set is generated in a
temporary folder.
"""
from __future__ import annotations

import argparse
import json
import sys
import tempfile
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
from PIL import Image  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
from ikd_edu.data.synthetic import ensure_synthetic  # noqa: E402
from ikd_edu.skeleton import COCO  # noqa: E402


def draw_panel(ax, image: np.ndarray, annotations: list[dict]) -> None:
    ax.imshow(image)
    joint_colours, edge_colours = COCO.joint_colours(), COCO.edge_colours()
    for ann in annotations:
        kp = np.asarray(ann["keypoints"], dtype=float).reshape(-1, 3)
        x, y, w, h = ann["bbox"]
        ax.add_patch(plt.Rectangle((x - 0.5, y - 0.5), w, h, fill=False, ec="white", lw=0.6, ls="--", alpha=0.7))
        for (a, b), colour in zip(COCO.edges, edge_colours):
            if kp[a, 2] > 0 and kp[b, 2] > 0:  # never draw to (0, 0) of an unlabelled joint
                ax.plot(kp[[a, b], 0], kp[[a, b], 1], color=colour, lw=1.2, alpha=0.9)
        for k in range(COCO.num_joints):
            if kp[k, 2] == 2:
                ax.plot(kp[k, 0], kp[k, 1], "o", ms=3.2, mfc=joint_colours[k], mec="white", mew=0.4)
            elif kp[k, 2] == 1:
                ax.plot(kp[k, 0], kp[k, 1], "o", ms=3.6, mfc="none", mec=joint_colours[k], mew=1.0)
    ax.set_xlim(-0.5, image.shape[1] - 0.5)
    ax.set_ylim(image.shape[0] - 0.5, -0.5)
    ax.set_xticks([])
    ax.set_yticks([])


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--root", default=None, help="existing synthetic set (default: generate one in a temp dir)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--rows", type=int, default=3)
    parser.add_argument("--cols", type=int, default=3, help="samples per row")
    parser.add_argument("--no-raw", dest="raw", action="store_false",
                        help="labelled panels only (default: each sample as a raw | labelled pair)")
    parser.add_argument("--out", default=str(ROOT / "docs" / "images" / "synthetic_samples.png"))
    args = parser.parse_args(argv)

    count = args.rows * args.cols
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(args.root) if args.root else ensure_synthetic(Path(tmp) / "synthetic", count, seed=args.seed,
                                                                  val_images=1, progress=False)
        coco = json.loads((root / "annotations" / "person_keypoints_train.json").read_text())
        by_image: dict[int, list] = {}
        for ann in coco["annotations"]:
            by_image.setdefault(ann["image_id"], []).append(ann)
        cols = args.cols * (2 if args.raw else 1)
        fig, axes = plt.subplots(args.rows, cols, figsize=(2.2 * cols, 2.2 * args.rows))
        flat_axes = np.asarray(axes).reshape(-1)
        for i, ax in enumerate(flat_axes[1::2] if args.raw else flat_axes):
            info = coco["images"][i]
            image = np.asarray(Image.open(root / "train" / info["file_name"]).convert("RGB"))
            if args.raw:
                raw_ax = flat_axes[2 * i]
                raw_ax.imshow(image)
                raw_ax.set_xticks([])
                raw_ax.set_yticks([])
            draw_panel(ax, image, by_image.get(info["id"], []))
        fig.suptitle("ikd-edu synthetic samples (raw | labelled): left blue, right orange, centre green; "
                     "filled = visible (v=2), hollow = occluded (v=1)", fontsize=9)
        fig.tight_layout(rect=(0, 0, 1, 0.96), pad=0.3)
        out = Path(args.out)
        out.parent.mkdir(parents=True, exist_ok=True)
        fig.savefig(out, dpi=110)
        plt.close(fig)
    print(f"wrote {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
