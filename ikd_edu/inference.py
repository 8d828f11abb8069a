"""Inference: one top-down prediction pass, shared by training evaluation and the browser.

For the crops ``x`` of a dataset (no augmentation)::

    H = model(x)                                              # (N, K, h, w)
    H = (H + flip_back(model(flip(x)))) / 2                   # flip test (optional)
    coords, maxvals = decode(H)                               # (N, K, 2) heatmap px, (N, K)
    keypoints = inverse_affine(center, scale, (h, w))(coords) # (N, K, 2) image px

:func:`merge_predictions` joins the per-process parts of a distributed evaluation.
"""
from __future__ import annotations

import contextlib

import numpy as np
import torch
from torch import nn

#: The per-instance arrays :func:`predict` returns (plus ``heatmaps`` on request).
FIELDS = ("index", "image_id", "keypoints", "maxvals", "box_score", "area")


def autocast_context(device: torch.device, dtype: torch.dtype | None):
    """``torch.autocast`` for ``dtype``, or a no-op context when AMP is off."""
    if dtype is None:
        return contextlib.nullcontext()
    return torch.autocast(device_type=device.type, dtype=dtype)


def _settings(cfg, flip_test, decode, batch_size, num_workers) -> tuple[bool, str, int, int]:
    """Explicit arguments win; then ``cfg.run``/``cfg.data``; then the defaults of :func:`predict`."""
    run, data = (cfg.run, cfg.data) if cfg is not None else (None, None)
    return (
        bool(flip_test if flip_test is not None else (run.flip_test if run else False)),
        str(decode if decode is not None else (run.decode if run else "quarter")),
        int(batch_size if batch_size is not None else (run.eval_batch_size if run else 32)),
        int(num_workers if num_workers is not None else (data.num_workers if data else 0)),
    )


@torch.no_grad()
def predict(model: nn.Module, dataset, indices=None, cfg=None, device: torch.device | None = None,
            amp_dtype: torch.dtype | None = None, channels_last: bool = False, *,
            flip_test: bool | None = None, decode: str | None = None, batch_size: int | None = None,
            num_workers: int | None = None, heatmap_joint: int | None = None) -> dict[str, np.ndarray]:
    """Keypoints in image pixels for the records ``indices`` of ``dataset`` (all if None), in that order.

    Args:
        model: a pose model ``(N, 3, H, W) -> (N, K, h, w)``; put in eval mode for the pass,
            its mode restored after.
        dataset: a top-down dataset whose items hold ``image``, ``center``, ``scale``,
            ``index``, ``image_id``, ``box_score``, ``area`` (``TopDownCocoDataset`` & co.)
            and whose ``skeleton`` gives the flip pairs.
        cfg: a training config: ``run.flip_test``, ``run.decode``, ``run.eval_batch_size``
            and ``data.num_workers`` are the defaults of the keyword arguments. Without it:
            no flip test, ``quarter`` decoding, batches of 32, no worker processes.
        device: where the model runs (default: the device of its parameters).
        heatmap_joint: also return ``heatmaps (N, h, w)``, the (flip-averaged) heatmap of
            this joint.

    Returns numpy arrays: ``index (N,)``, ``image_id (N,)``, ``keypoints (N, K, 2)``,
    ``maxvals (N, K)``, ``box_score (N,)``, ``area (N,)``.
    """
    from ikd_edu.codec import decode_heatmaps, flip_test_average
    from ikd_edu.geometry import heatmap_to_image

    flip, method, batch_size, num_workers = _settings(cfg, flip_test, decode, batch_size, num_workers)
    if device is None:
        param = next(model.parameters(), None)
        device = param.device if param is not None else torch.device("cpu")
    device = torch.device(device)
    indices = range(len(dataset)) if indices is None else indices
    subset = torch.utils.data.Subset(dataset, [int(i) for i in indices])
    loader = torch.utils.data.DataLoader(subset, batch_size=batch_size, shuffle=False,
                                         num_workers=num_workers, pin_memory=device.type == "cuda")
    fields = FIELDS + (("heatmaps",) if heatmap_joint is not None else ())
    out: dict[str, list] = {k: [] for k in fields}
    was_training = model.training
    model.eval()
    try:
        for batch in loader:
            images = batch["image"].to(device, non_blocking=True)
            if channels_last:
                images = images.contiguous(memory_format=torch.channels_last)
            with autocast_context(device, amp_dtype):
                heatmaps = model(images)  # (N, K, h, w)
                if flip:
                    heatmaps = flip_test_average(heatmaps.float(), model(images.flip(3)).float(),
                                                 dataset.skeleton.flip_index, shift=True)
            heatmaps = heatmaps.float()
            coords, maxvals = decode_heatmaps(heatmaps, method=method)  # (N, K, 2) heatmap px
            keypoints = heatmap_to_image(coords.cpu(), batch["center"], batch["scale"], tuple(heatmaps.shape[-2:]))
            out["keypoints"].append(keypoints.numpy())
            out["maxvals"].append(maxvals.float().cpu().numpy())
            for key in ("index", "image_id", "box_score", "area"):
                out[key].append(batch[key].numpy())
            if heatmap_joint is not None:
                out["heatmaps"].append(heatmaps[:, heatmap_joint].cpu().numpy())
    finally:
        model.train(was_training)
    return {k: (np.concatenate(v) if v else np.zeros((0,))) for k, v in out.items()}


def merge_predictions(parts: list[dict[str, np.ndarray]]) -> dict[str, np.ndarray]:
    """Concatenate per-rank predictions and sort them by record index."""
    parts = [p for p in parts if len(p["index"])]
    if not parts:
        return {}
    merged = {k: np.concatenate([p[k] for p in parts]) for k in parts[0]}
    order = np.argsort(merged["index"], kind="stable")
    return {k: v[order] for k, v in merged.items()}
