"""Synthetic dataset generation speed: images/s for 1,000 images (drawing + JPEG + writing).

Usage: python benchmarks/bench_synthetic.py [--images 1000] [--workers 1,2] [--size 192x192]

Target: 1,000 images of 192x192 in <= 60 s on 2 CPU cores. Each run writes a fresh set
into a temporary folder (the val split adds images // 16 more, counted in the rate).
"""
from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from ikd_edu.data.synthetic import generate_synthetic  # noqa: E402
from ikd_edu.validate import parse_size  # noqa: E402


def bench(num_images: int, workers: int, image_size: tuple[int, int]) -> dict:
    with tempfile.TemporaryDirectory() as tmp:
        start = time.perf_counter()
        summary = generate_synthetic(Path(tmp) / "synthetic", num_images, seed=0, image_size=image_size,
                                     progress=False, workers=workers)
        seconds = time.perf_counter() - start
    total = summary["train"]["images"] + summary["val"]["images"]
    return {"workers": workers, "images": total, "seconds": seconds, "images_per_s": total / seconds}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--images", type=int, default=1000)
    parser.add_argument("--workers", default="1,2", help="comma-separated worker counts")
    parser.add_argument("--size", default="192x192", help="HxW")
    args = parser.parse_args(argv)
    H, W = parse_size(args.size, "--size")
    print(f"synthetic generation, {args.images} train images (+{max(1, args.images // 16)} val), {H}x{W}")
    for workers in (int(w) for w in args.workers.split(",")):
        r = bench(args.images, workers, (H, W))
        print(f"workers={r['workers']}: {r['images']} images in {r['seconds']:.1f} s = "
              f"{r['images_per_s']:.0f} images/s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
