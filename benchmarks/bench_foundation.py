"""The foundation's speed in one run: data-pipeline crops/s, then codec times vs a per-joint loop.

Usage: python benchmarks/bench_foundation.py [--quick]

Runs ``bench_data.py`` (person crops/s at 256x192 and 128x96, 1 process and 2 workers) and
``bench_codec.py`` (encode/decode of 64 x 17 maps at 64x48: vectorised vs per-joint loop) one
after the other in this process, so both tables come from the same machine state (the load
average is printed before each). ``--quick`` shrinks both to a smoke test (numbers meaningless).
"""
from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

import torch  # noqa: E402

import bench_codec  # noqa: E402
import bench_data  # noqa: E402


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="tiny settings: checks the scripts run")
    args = parser.parse_args(argv)
    data_args = ["--images", "8", "--max-items", "16", "--image-sizes", "192x192"] if args.quick else []
    codec_args = ["--batch", "4", "--repeats", "1"] if args.quick else []
    threads = torch.get_num_threads()  # bench_data sets its own count; the codec table wants the default back
    print(f"== data pipeline (load average {os.getloadavg()[0]:.2f}) ==", flush=True)
    rc = bench_data.main(data_args)
    torch.set_num_threads(threads)
    print(f"\n== codec (load average {os.getloadavg()[0]:.2f}) ==", flush=True)
    return rc or bench_codec.main(codec_args)


if __name__ == "__main__":
    raise SystemExit(main())
