"""Training data pipeline speed: person crops/s (load + augment + crop + encode heatmaps).

Usage: python benchmarks/bench_data.py [--images 300] [--sizes 256x192,128x96]
                                       [--image-sizes 192x192,480x640] [--workers 0,2]

On the synthetic set (generated into a temporary folder, 1-4 people per image) with
``TopDownCocoDataset(train=True)`` and the default augmentation. ``workers=0`` is a plain
loop in this process; ``workers=2`` a ``DataLoader`` with 2 worker processes (batch 32,
the time includes starting the workers). A per-stage breakdown (single process) shows
where the time goes. The machine load average is printed: on a shared machine, compare
only numbers taken at a similar load.
"""
from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from ikd_edu.data.coco import TopDownCocoDataset  # noqa: E402
from ikd_edu.data.images import load_rgb  # noqa: E402
from ikd_edu.data.synthetic import generate_synthetic  # noqa: E402
from ikd_edu.data.transforms import top_down_sample  # noqa: E402
from ikd_edu.validate import parse_size  # noqa: E402


def _hw(text: str) -> tuple[int, int]:
    return parse_size(text, "--sizes")


def crops_per_s(ds, workers: int, max_items: int) -> float:
    n = min(len(ds), max_items)
    subset = torch.utils.data.Subset(ds, range(n))
    start = time.perf_counter()
    if workers == 0:
        for i in range(n):
            subset[i]
    else:
        loader = torch.utils.data.DataLoader(subset, batch_size=32, num_workers=workers, shuffle=False)
        for _ in loader:
            pass
    return n / (time.perf_counter() - start)


def stage_breakdown(ds, n: int) -> dict[str, float]:
    """Milliseconds per crop for each stage (single process)."""
    from ikd_edu.codec import encode_heatmaps

    rng = np.random.default_rng(0)
    n = min(n, len(ds))
    t_load = t_crop = t_enc = 0.0
    for i in range(n):
        t0 = time.perf_counter()
        image = load_rgb(ds.image_paths[ds.rec_image[i]])
        t1 = time.perf_counter()
        s = top_down_sample(image, ds.rec_center[i], ds.rec_scale[i], ds.rec_joints[i], input_size=ds.input_size,
                            skeleton=ds.skeleton, train=True, augment=ds.augment, rng=rng)
        t2 = time.perf_counter()
        encode_heatmaps(torch.from_numpy(s["joints_crop"] / ds.feat_stride).float()[None],
                        torch.from_numpy(s["visible"])[None], heatmap_size=ds.heatmap_size, sigma=ds.sigma)
        t3 = time.perf_counter()
        t_load, t_crop, t_enc = t_load + t1 - t0, t_crop + t2 - t1, t_enc + t3 - t2
    return {"load": 1e3 * t_load / n, "augment+crop": 1e3 * t_crop / n, "encode": 1e3 * t_enc / n}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--images", type=int, default=300, help="synthetic training images per image size")
    parser.add_argument("--sizes", default="256x192,128x96", help="crop sizes HxW (heatmaps are 1/4)")
    parser.add_argument("--image-sizes", default="192x192,480x640", help="synthetic image sizes HxW")
    parser.add_argument("--workers", default="0,2", help="comma-separated DataLoader worker counts")
    parser.add_argument("--max-items", type=int, default=600, help="crops timed per configuration")
    parser.add_argument("--threads", type=int, default=1,
                        help="torch intra-op threads in this process (DataLoader workers always use 1); "
                        "per-crop ops are tiny, so more threads only add contention")
    args = parser.parse_args(argv)
    torch.manual_seed(0)
    torch.set_num_threads(args.threads)
    print(f"torch {torch.__version__}, {torch.get_num_threads()} intra-op threads, "
          f"{len(os.sched_getaffinity(0))} CPUs, load average {os.getloadavg()[0]:.1f} (start)")
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        for image_hw in map(_hw, args.image_sizes.split(",")):
            root = Path(tmp) / f"synthetic_{image_hw[0]}x{image_hw[1]}"
            generate_synthetic(root, args.images, seed=0, val_images=1, image_size=image_hw, progress=False)
            for input_hw in map(_hw, args.sizes.split(",")):
                heatmap_hw = (input_hw[0] // 4, input_hw[1] // 4)
                ds = TopDownCocoDataset(root / "annotations" / "person_keypoints_train.json", root / "train",
                                        input_size=input_hw, heatmap_size=heatmap_hw, train=True)
                crops_per_s(ds, 0, 20)  # warm-up
                stages = stage_breakdown(ds, 200)
                for workers in (int(w) for w in args.workers.split(",")):
                    rate = crops_per_s(ds, workers, args.max_items)
                    rows.append((image_hw, input_hw, workers, rate, stages))
    print(f"load average {os.getloadavg()[0]:.1f} (end)")
    print(f"\n{'image':>9} {'crop':>8} {'workers':>7} {'crops/s':>8}   ms/crop: load  augment+crop  encode")
    for image_hw, input_hw, workers, rate, st in rows:
        print(f"{image_hw[0]:>4}x{image_hw[1]:<4} {input_hw[0]:>4}x{input_hw[1]:<3} {workers:>7} {rate:>8.0f}   "
              f"         {st['load']:5.2f}  {st['augment+crop']:12.2f}  {st['encode']:6.2f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
