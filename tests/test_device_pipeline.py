"""The device pipeline (run with device=cpu) against the host pipeline on the same records and draws."""
from __future__ import annotations

import numpy as np
import pytest
import torch

from ikd_edu.data.coco import TopDownCocoDataset
from ikd_edu.data.device_pipeline import DevicePipeline, JpegBatches, warp_persons
from ikd_edu.data.transforms import AugmentConfig, crop_images_batched, denormalize
from ikd_edu.train import distributed as D


@pytest.fixture(scope="module")
def train_set(synthetic_root):
    # the reference augmentation plus half-body: every random branch of draw_augmentation
    aug = AugmentConfig(half_body_prob=0.3)
    return TopDownCocoDataset(synthetic_root / "annotations/person_keypoints_train.json", synthetic_root / "train",
                              input_size=(64, 48), heatmap_size=(16, 12), train=True, augment=aug)


def _host_batch(ds, keys):
    items = [D.SeededSamples(ds)[k] for k in keys]
    return {k: torch.stack([it[k] for it in items]) for k in ("image", "heatmaps", "target_weight", "index", "flipped")}


@pytest.mark.parametrize("warp", ["canvas", "footprint"])  # the GPU's one-call warp and the CPU's
def test_device_pipeline_equals_host_pipeline(train_set, warp):
    sampler = D.ResumableBatchSampler(np.arange(len(train_set)), 16, seed=3, epoch=0, group_of=train_set.rec_image)
    pipe = DevicePipeline.for_dataset(train_set, "cpu", warp=warp)
    host_side = JpegBatches(train_set)
    flips = 0
    for keys in list(sampler)[:3]:
        want = _host_batch(train_set, keys)
        got = pipe(host_side[keys])
        assert torch.equal(got["index"], want["index"]) and torch.equal(got["flipped"], want["flipped"])
        flips += int(got["flipped"].sum())
        grey_got = denormalize(got["image"]) * 255  # (B, 3, H, W) grey levels
        grey_want = denormalize(want["image"]) * 255
        assert (grey_got - grey_want).abs().max() <= 1.0  # every pixel, border included
        assert (got["heatmaps"] - want["heatmaps"]).abs().max() <= 1e-4
        assert torch.equal(got["target_weight"], want["target_weight"])
    assert 0 < flips < 48  # both flipped and unflipped crops were compared


def test_grouped_order_decodes_every_image_once_per_epoch(train_set):
    """Same (record, seed) pairs as the plain order; records of an image adjacent; one decode per image."""
    idx = np.arange(len(train_set))
    plain = [k for b in D.ResumableBatchSampler(idx, 4, seed=1, epoch=2) for k in b]
    grouped_batches = list(D.ResumableBatchSampler(idx, 4, seed=1, epoch=2, group_of=train_set.rec_image))
    grouped = [k for b in grouped_batches for k in b]
    n = len(idx) // 4 * 4
    full_plain, _ = D.epoch_order(1, 2, idx)
    assert len(grouped) == n and len(set(grouped)) == n
    pairs = dict(zip(*[t.tolist() for t in D.epoch_order(1, 2, idx)]))
    assert all(pairs[i] == s for i, s in grouped)  # every record keeps its seed (its augmentation)
    assert len(plain) == n and full_plain.numel() == len(idx)
    images = [int(train_set.rec_image[i]) for i, _ in grouped]
    changes = sum(a != b for a, b in zip(images, images[1:]))
    assert changes == len(set(images)) - 1  # contiguous runs: each image appears in one run
    pipe, host_side = DevicePipeline.for_dataset(train_set, "cpu"), JpegBatches(train_set)
    for keys in grouped_batches:
        pipe(host_side[keys])
    assert pipe.decoded == len(set(images))  # split images were carried over, not decoded again


def test_warp_persons_matches_crop_images_batched_on_images_of_different_sizes():
    g = torch.Generator().manual_seed(0)
    images = [torch.randint(0, 256, (3, 30, 40), generator=g, dtype=torch.uint8),
              torch.randint(0, 256, (3, 25, 33), generator=g, dtype=torch.uint8)]
    mats = torch.tensor([[[0.8, 0.1, -3.0], [-0.1, 0.8, 2.0]],  # partly outside: the zero border
                         [[-1.2, 0.0, 40.0], [0.0, 1.2, -5.0]],  # mirrored
                         [[0.5, 0.0, 1.0], [0.0, 0.5, 1.0]]], dtype=torch.float64)
    image_of = torch.tensor([0, 1, 1])
    for method in ("canvas", "footprint"):
        got = warp_persons(images, image_of, mats, (16, 12), method=method) * 255  # uint8 in: 0..1 out
        for b, u in enumerate(image_of.tolist()):
            want = crop_images_batched(images[u][None].float(), mats[b:b + 1], (16, 12))[0]
            assert (got[b] - want).abs().max() < 1e-3, method


def test_device_pipeline_keeps_the_channel_order_and_the_weight_rule(synthetic_root):
    """BGR inputs (official weights) and the inside-crop weight rule, as the host pipeline makes them."""
    ds = TopDownCocoDataset(synthetic_root / "annotations/person_keypoints_train.json", synthetic_root / "train",
                            input_size=(64, 48), heatmap_size=(16, 12), train=True,
                            augment=AugmentConfig(scale_factor=0.5), channel_order="bgr",
                            target_weight_rule="inside-crop")
    keys = next(iter(D.ResumableBatchSampler(np.arange(len(ds)), 16, seed=5, epoch=0, group_of=ds.rec_image)))
    want = _host_batch(ds, keys)
    got = DevicePipeline.for_dataset(ds, "cpu")(JpegBatches(ds)[keys])
    assert (got["image"] - want["image"]).abs().max() * 255 * 0.229 <= 1.0  # one grey level (std 0.225-0.229)
    assert (want["target_weight"] == 0).any()  # the rule removed joints here, and the device path agrees
    assert torch.equal(got["target_weight"], want["target_weight"])


def test_the_workers_run_the_cpu_pipeline_and_give_the_same_batches(train_set, tmp_path):
    """On a CPU with workers the whole pipeline runs inside them (make_loader); batches equal the in-process ones."""
    from ikd_edu.train import engine as E
    from ikd_edu.train.config import load_config

    cfg = load_config("quick", ["data.num_workers=2"], role="teacher", check_files=False)
    sampler = D.RunBatchSampler(np.arange(len(train_set)), 8, seed=0, epoch=0, start_batch=0, steps=4,
                                group_of=train_set.rec_image)
    pipe = DevicePipeline.for_dataset(train_set, "cpu")
    assert pipe.in_workers(2) and not pipe.in_workers(0)
    in_workers = list(E.make_loader(train_set, sampler, cfg, torch.device("cpu"), seed=0, pipeline=pipe))
    host_side = JpegBatches(train_set)
    in_process = [pipe(host_side[keys]) for keys in sampler]
    assert len(in_workers) == len(in_process) == 4
    for a, b in zip(in_workers, in_process):
        assert torch.equal(a["index"], b["index"]) and torch.equal(a["image"], b["image"])
        assert torch.equal(a["heatmaps"], b["heatmaps"]) and torch.equal(a["target_weight"], b["target_weight"])


def test_engine_trains_with_the_device_pipeline_on_the_cpu(synthetic_root, tmp_path):
    from tiny_runs import tiny

    from ikd_edu.train import engine as E
    from ikd_edu.train.config import load_config

    cfg = load_config("quick", tiny(synthetic_root, tmp_path / "run", steps=3, **{"data.pipeline": "device",
                                                                                  "data.num_workers": 1}))
    assert E.use_device_pipeline(cfg, torch.device("cpu"))
    summary = E.train(cfg)
    assert summary["steps"] == 3 and np.isfinite(summary["final"]["AP"])
