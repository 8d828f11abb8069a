"""Training crops/s: the host pipeline (per-person decode + crop + encode in workers) vs the device pipeline.

Usage: python benchmarks/bench_device_pipeline.py [--images 96] [--image-size 480x640] [--input 256x192]
                                                  [--workers 2] [--batch 32] [--device cpu] [--epochs 2]

Both run in one process, one after the other, on the same synthetic JPEGs (generated into a
temporary folder, 1-4 people per image), the same records, sample seeds and reference
augmentation (scale 0.3, rotation 40 deg p 0.6, flip 0.5):

* **host**: ``DataLoader(SeededSamples(dataset), batch_sampler=ResumableBatchSampler)`` with N
  workers, each item one person (its image decoded, cropped, encoded), as the engine does
  with ``data.pipeline=host``;
* **device**: ``DataLoader(JpegBatches(dataset))`` with N workers (bytes + geometry), then
  :class:`ikd_edu.data.device_pipeline.DevicePipeline` on ``--device`` (decode once per image,
  warp, targets), as ``data.pipeline=device``: in this process on a GPU, inside the workers on
  a CPU (``DevicePipeline.in_workers``).

Throughput counts batches after the first (worker start-up excluded) until ``--epochs``
epochs are done; the device figure includes moving the batch to the device (and, on CUDA,
a final synchronize). The load average is printed: on a shared machine compare only
numbers from the same run.
"""
from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from ikd_edu.data.coco import TopDownCocoDataset  # noqa: E402
from ikd_edu.data.device_pipeline import DevicePipeline  # noqa: E402
from ikd_edu.data.synthetic import generate_synthetic  # noqa: E402
from ikd_edu.train import distributed as D  # noqa: E402


def _hw(text: str) -> tuple[int, int]:
    h, w = (int(v) for v in text.lower().split("x"))
    return h, w


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def host_crops_per_s(ds, workers: int, batch: int, epochs: int, device: torch.device) -> float:
    sampler = D.RunBatchSampler(np.arange(len(ds)), batch, seed=0, epoch=0, start_batch=0,
                                steps=epochs * (len(ds) // batch))
    loader = torch.utils.data.DataLoader(D.SeededSamples(ds), batch_sampler=sampler, num_workers=workers,
                                         pin_memory=device.type == "cuda", persistent_workers=workers > 0,
                                         prefetch_factor=4 if workers else None)
    n, start = 0, None
    for b in loader:
        images = b["image"].to(device, non_blocking=True)
        b["heatmaps"].to(device, non_blocking=True)
        if start is None:  # after the first batch: worker start-up excluded
            _sync(device)
            start = time.perf_counter()
            continue
        n += images.shape[0]
    _sync(device)
    return n / (time.perf_counter() - start)


def device_crops_per_s(ds, workers: int, batch: int, epochs: int, device: torch.device) -> tuple[float, int]:
    sampler = D.RunBatchSampler(np.arange(len(ds)), batch, seed=0, epoch=0, start_batch=0,
                                steps=epochs * (len(ds) // batch), group_of=ds.rec_image)
    pipe = DevicePipeline.for_dataset(ds, device)
    batches = pipe.batches(ds, sampler, num_workers=workers, pin_memory=device.type == "cuda",
                           persistent_workers=workers > 0, prefetch_factor=4 if workers else None)
    n, start = 0, None
    for b in batches:
        if start is None:
            _sync(device)
            start = time.perf_counter()
            continue
        n += b["image"].shape[0]
    _sync(device)
    if pipe.in_workers(workers):  # the workers' counters are not ours: one decode per image and batch
        return n / (time.perf_counter() - start), sum(len({int(ds.rec_image[i]) for i, _ in keys}) for keys in sampler)
    return n / (time.perf_counter() - start), pipe.decoded


def report(res: dict, json_path: str | None) -> None:
    """Print the results as JSON, and write them to ``json_path`` when given (``--json``)."""
    print(json.dumps(res, indent=1))
    if json_path:
        Path(json_path).write_text(json.dumps(res, indent=1))


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--images", type=int, default=96)
    ap.add_argument("--image-size", default="480x640", help="synthetic image H x W")
    ap.add_argument("--input", default="256x192", help="crop H x W (heatmap = input / 4)")
    ap.add_argument("--workers", type=int, default=2)
    ap.add_argument("--batch", type=int, default=32)
    ap.add_argument("--epochs", type=int, default=2)
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--data", help="an existing synthetic root (else generated into a temporary folder)")
    ap.add_argument("--json", help="also write the results here")
    a = ap.parse_args()
    device = torch.device(a.device)
    in_h, in_w = _hw(a.input)
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(a.data) if a.data else Path(tmp)
        if not a.data:
            t0 = time.time()
            generate_synthetic(root, a.images, seed=0, val_images=1, image_size=_hw(a.image_size), progress=False)
            print(f"generated {a.images} synthetic {a.image_size} JPEGs in {time.time() - t0:.0f} s", flush=True)
        ds = TopDownCocoDataset(root / "annotations/person_keypoints_train.json", root / "train",
                                input_size=(in_h, in_w), heatmap_size=(in_h // 4, in_w // 4), train=True)
        res = {"records": len(ds), "images": len(ds.image_paths), "image_size": a.image_size, "input": a.input,
               "workers": a.workers, "batch": a.batch, "epochs": a.epochs, "device": str(device),
               "torch_threads": torch.get_num_threads(), "cpus": os.cpu_count(), "load_avg_before": os.getloadavg()[0]}
        res["host_crops_s"] = round(host_crops_per_s(ds, a.workers, a.batch, a.epochs, device), 1)
        dev_s, decoded = device_crops_per_s(ds, a.workers, a.batch, a.epochs, device)
        res["device_crops_s"] = round(dev_s, 1)
        res["device_decodes_per_epoch"] = round(decoded / a.epochs, 1)
        res["speedup"] = round(res["device_crops_s"] / res["host_crops_s"], 2)
        res["load_avg_after"] = os.getloadavg()[0]
    print(f"crops/s at {a.input} from {a.image_size} JPEGs, {a.workers} workers, batch {a.batch}: "
          f"host {res['host_crops_s']} | device ({device}) {res['device_crops_s']}  (x{res['speedup']})")
    report(res, a.json)
    return 0


if __name__ == "__main__":
    sys.exit(main())
