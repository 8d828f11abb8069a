"""The device-side input pipeline: JPEG bytes from the workers, everything else batched on the device.

The host pipeline (:meth:`ikd_edu.data.coco.TopDownDataset.__getitem__`) decodes the whole
image, crops one person and draws its heatmaps, once per *person*, in DataLoader workers.
On 2 CPU cores that is ~340 crops/s from 640x480 JPEGs; a GPU trains the IKD student at
thousands of images per second. Here the work is split where it is cheapest:

**Workers** (:class:`JpegBatches`, one item = one training batch of ``(record, seed)`` keys)
read the JPEG *bytes* of every image in the batch once, and draw each person's augmentation
(:func:`ikd_edu.data.transforms.draw_augmentation`, the same draws from the same seed as the
host pipeline) and its crop matrix and joints (:func:`ikd_edu.data.transforms.crop_geometry`):
small numpy arrays. The image width for the flip comes from the JPEG header.

**The device** (:class:`DevicePipeline`, called in the training process) then does, per batch:

1. *decode* every image once: ``torchvision.io.decode_jpeg(list, device='cuda')`` (nvJPEG)
   on a GPU, libjpeg-turbo on the CPU; an image split across two batches is kept from the
   previous batch, so with :class:`ikd_edu.train.distributed.ResumableBatchSampler`'s
   ``group_of`` order every image is decoded once per epoch;
2. *warp* all persons in **one** ``grid_sample`` call: the decoded images are stacked into
   one tall canvas, each below a row of zeros and right of a column of zeros; person ``n``
   samples its own image at ``A_n^-1 [x, y, 1]`` (the reference matrices, the flip folded in
   as in :func:`ikd_edu.data.transforms.top_down_sample`), and samples whose source point
   is outside its image are set to 0. The zero gaps make bilinear weights at an image's
   border exactly those of ``padding_mode='zeros'`` on that image alone (cv2's
   ``borderValue=0``);
3. *normalise* (ImageNet mean/std) and *encode* the Gaussian targets with
   :func:`ikd_edu.codec.encode_heatmaps` (the one encoder of the project), batched.

The batch is the dict the training loop reads (``image``, ``heatmaps``, ``target_weight``
on the device; ``index``, ``flipped`` on the host, for the teacher cache). It equals the
host pipeline's items for the same records and seeds: crop pixels within one grey level,
targets within 1e-4, weights equal (``tests/test_device_pipeline.py``).

Nothing in :meth:`DevicePipeline.__call__` reads a device value back to the host: image
sizes are shapes, the rest are arithmetic on device tensors.
"""
from __future__ import annotations

import warnings
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from ikd_edu.data.images import check_pixels, decode_rgb, header_size, read_image_file
from ikd_edu.data.transforms import (_inverse_affine, _sampling_theta, crop_geometry, draw_augmentation,
                                     to_network_input)

__all__ = ["JpegBatches", "DevicePipeline", "read_image_bytes", "warp_persons"]


def read_image_bytes(path) -> tuple[torch.Tensor, int]:
    """``(data, width)``: a JPEG's bytes as a ``(L,)`` uint8 tensor and its width from the header.

    Other formats (PNG, ...) are decoded here (``(3, H, W)`` uint8): the device decoder reads
    JPEG only. Raises like :func:`ikd_edu.data.images.load_rgb`.
    """
    path = Path(path)
    data = read_image_file(path)
    size = header_size(data)
    if size is not None and data[:2] == b"\xff\xd8":
        check_pixels(path, *size)
        return torch.frombuffer(bytearray(data), dtype=torch.uint8), int(size[1])
    rgb = decode_rgb(path, data)  # (H, W, 3): PNG and everything PIL reads
    return torch.from_numpy(np.ascontiguousarray(rgb)).permute(2, 0, 1).contiguous(), int(rgb.shape[1])


class JpegBatches(torch.utils.data.Dataset):
    """Host side: item ``keys`` (a batch of ``(record index, sample seed)``) -> bytes + geometry.

    Use with ``DataLoader(JpegBatches(ds), sampler=<batch sampler>, batch_size=None)``.
    ``finish`` (a :class:`DevicePipeline` on the CPU) turns the item into the finished batch
    inside the worker, so N CPU workers decode and warp in parallel.

    Returns a dict (B persons of U images, K joints):
        ``encoded``: list of U uint8 tensors (JPEG bytes, or decoded ``(3, H, W)`` pixels);
        ``image_ids (U,)`` the dataset's image index of each; ``image_of (B,)`` which of the U;
        ``matrix (B, 2, 3)`` float64 image -> crop; ``keypoints (B, K, 2)`` float32 heatmap
        pixels; ``visible (B, K)`` float32; ``index (B,)``, ``flipped (B,)``, ``center (B, 2)``,
        ``scale (B, 2)``, ``rotation (B,)``.
    """

    def __init__(self, dataset, finish=None) -> None:
        self.dataset = dataset
        self.finish = finish

    def __len__(self) -> int:
        return len(self.dataset)

    def _draw(self, index: int, seed: int, width: int) -> dict:
        ds = self.dataset
        rng = ds.seeded_rng(seed) if ds.train else None  # the host pipeline's draw for this seed
        return draw_augmentation(ds.rec_center[index], ds.rec_scale[index], ds.rec_joints[index],
                                 image_width=width, input_size=ds.input_size, skeleton=ds.skeleton,
                                 train=ds.train, augment=ds.augment, rng=rng)

    def __getitem__(self, keys) -> dict:
        ds = self.dataset
        index = [int(i) for i, _ in keys]
        images: dict[int, int] = {}  # dataset image -> position in `encoded`
        encoded, widths = [], {}
        for i in index:
            im = int(ds.rec_image[i])
            if im not in images:
                images[im] = len(encoded)
                data, widths[im] = read_image_bytes(ds.image_paths[im])
                encoded.append(data)
        draws = [self._draw(i, seed, widths[int(ds.rec_image[i])]) for i, (_, seed) in zip(index, keys)]
        width = [widths[int(ds.rec_image[i])] for i in index]
        g = crop_geometry(np.stack([d["center"] for d in draws]), np.stack([d["scale"] for d in draws]),
                          [d["rotation"] for d in draws], [d["flip"] for d in draws],
                          np.stack([d["xy"] for d in draws]), np.stack([d["visible"] for d in draws]), width,
                          ds.input_size, ds.target_weight_rule)
        item = {
            "encoded": encoded,
            "image_ids": torch.tensor(list(images), dtype=torch.int64),
            "image_of": torch.tensor([images[int(ds.rec_image[i])] for i in index], dtype=torch.int64),
            "matrix": torch.from_numpy(g["matrix"]),  # (B, 2, 3) float64
            "keypoints": torch.from_numpy(g["joints_crop"] / ds.feat_stride).float(),  # (B, K, 2) as the host pipeline
            "visible": torch.from_numpy(g["visible"]),  # (B, K)
            "index": torch.tensor(index, dtype=torch.int64),
            "flipped": torch.tensor([d["flip"] for d in draws]),
            "center": torch.tensor(np.stack([d["center"] for d in draws]), dtype=torch.float32),
            "scale": torch.tensor(np.stack([d["scale"] for d in draws]), dtype=torch.float32),
            "rotation": torch.tensor([d["rotation"] for d in draws], dtype=torch.float32),
        }
        return self.finish(item) if self.finish is not None else item


WARP_METHODS = ("auto", "canvas", "footprint")


def warp_persons(images: list[torch.Tensor], image_of: torch.Tensor, matrices: torch.Tensor,
                 output_size: tuple[int, int], method: str = "auto") -> torch.Tensor:
    """Bilinear affine crops of B persons from U images (any sizes), cv2.warpAffine semantics.

    Args:
        images: U tensors ``(3, H_u, W_u)`` (uint8 or float) on one device.
        image_of: ``(B,)`` which image each person is cut from.
        matrices: ``(B, 2, 3)`` image -> crop matrices (pixel units, integer pixel centres).
        output_size: crop ``(H_out, W_out)``.
        method: ``"canvas"``: all persons in **one** ``grid_sample`` call over a canvas of the
            whole images (a few kernel launches: the GPU path); ``"footprint"``: one
            :func:`ikd_edu.data.transforms.crop_image` per person, which converts only the part
            of the image its crop can touch (on a CPU converting whole images to float costs
            more than the warp); ``"auto"``: canvas on CUDA, footprint elsewhere.

    Returns:
        ``(B, 3, H_out, W_out)`` float32, 0..1 for uint8 images (else the images' range):
        ``out[b, :, y, x]`` is the bilinear sample of ``images[image_of[b]]`` at
        ``A_b^-1 [x, y, 1]``, 0 outside the image (``INTER_LINEAR``, ``borderValue=0``).
    """
    if method not in WARP_METHODS:
        raise ValueError(f"method must be one of {WARP_METHODS}, got {method!r}")
    dev = images[0].device
    if method == "footprint" or (method == "auto" and dev.type != "cuda"):
        from ikd_edu.data.transforms import crop_image

        m = matrices.detach().cpu().numpy()
        return torch.stack([crop_image(images[u], m[b], output_size)
                            for b, u in enumerate(image_of.tolist())]).to(dev)
    scale_01 = images[0].dtype == torch.uint8
    out_h, out_w = int(output_size[0]), int(output_size[1])
    heights = [int(im.shape[-2]) for im in images]
    widths = [int(im.shape[-1]) for im in images]
    # canvas: a zero row above every image and a zero column to its left; images at (top_u, 1)
    tops = np.cumsum([1] + [h + 1 for h in heights[:-1]])
    canvas_h, canvas_w = int(tops[-1] + heights[-1] + 1), max(widths) + 2
    canvas = torch.zeros(3, canvas_h, canvas_w, dtype=torch.float32, device=dev)
    for im, top, h, w in zip(images, tops.tolist(), heights, widths):
        canvas[:, top:top + h, 1:1 + w] = im
    # the sampling matrices are computed on the host (the worker sent them there, float64) and
    # moved once: nothing here reads a device value back, and no inverse runs on the device
    of = image_of.cpu()
    top = torch.as_tensor(tops, dtype=torch.float64)[of]  # (B,) first canvas row of each image
    shift = torch.stack([torch.ones_like(top), top], dim=-1)  # (B, 2) image pixels -> canvas pixels
    to_canvas = _inverse_affine(matrices.detach().cpu().to(torch.float64))  # (B, 2, 3) crop -> image pixels
    to_canvas[:, :, 2] += shift  # crop -> canvas pixels
    theta = _sampling_theta(to_canvas, (canvas_h, canvas_w), (out_h, out_w))  # (B, 2, 3), float64
    scale = torch.tensor([2.0 / canvas_w, 2.0 / canvas_h], dtype=torch.float64)  # canvas pixel x -> scale x + offset
    offset = torch.tensor([1.0 / canvas_w - 1.0, 1.0 / canvas_h - 1.0], dtype=torch.float64)
    # a sample whose source point lies 1 px or more outside its own image would read a neighbour
    # in the canvas: 0 there. Bounds (-1, w) x (-1, h) in image pixels, in normalised units:
    size = torch.tensor([widths, heights], dtype=torch.float64).T[of]  # (B, 2) (w, h)
    lo = scale * (shift - 1.0) + offset  # (B, 2) at image pixel -1
    hi = scale * (size + shift) + offset  # (B, 2) at image pixel w (h)
    theta, lo, hi = (t.float().to(dev, non_blocking=True) for t in (theta, lo, hi))
    grid = F.affine_grid(theta, [len(of), 3, out_h, out_w], align_corners=False)  # (B, H_out, W_out, 2)
    out = F.grid_sample(canvas[None], grid.reshape(1, -1, out_w, 2), mode="bilinear", padding_mode="zeros",
                        align_corners=False)  # (1, 3, B H_out, W_out)
    out = out.reshape(3, len(of), out_h, out_w).transpose(0, 1)  # (B, 3, H_out, W_out)
    inside = ((grid > lo[:, None, None, :]) & (grid < hi[:, None, None, :])).all(-1)  # (B, H_out, W_out)
    out = out * inside[:, None]
    return out.div_(255.0) if scale_01 else out


class DevicePipeline:
    """Device side: a :class:`JpegBatches` batch -> the training batch, on ``device``.

    Args:
        input_size: crop ``(H, W)``; heatmap_size: ``(h, w)``; sigma, unbiased: the encoder's.
        device: where to decode and compute (``cuda`` decodes with nvJPEG).

    ``pipeline(host_batch)`` returns ``image (B, 3, H, W)`` normalised, ``heatmaps (B, K, h, w)``,
    ``target_weight (B, K)`` on ``device``; ``index``, ``flipped`` (host), and ``center``,
    ``scale``, ``rotation`` as the worker sent them. ``decoded`` counts images decoded so far.
    """

    def __init__(self, input_size, heatmap_size, sigma: float = 2.0, unbiased: bool = False,
                 device: torch.device | str = "cpu", channel_order: str = "rgb", warp: str = "auto") -> None:
        self.input_size = (int(input_size[0]), int(input_size[1]))
        self.heatmap_size = (int(heatmap_size[0]), int(heatmap_size[1]))
        self.sigma, self.unbiased = float(sigma), bool(unbiased)
        self.device = torch.device(device)
        self.channel_order = channel_order
        self.warp = warp  # warp_persons' method
        self.decoded = 0
        self._carry: tuple[int, torch.Tensor] | None = None  # (dataset image, pixels) of the last image

    @classmethod
    def for_dataset(cls, dataset, device, warp: str = "auto") -> "DevicePipeline":
        return cls(dataset.input_size, dataset.heatmap_size, dataset.sigma, dataset.unbiased_encoding, device,
                   dataset.channel_order, warp)

    def in_workers(self, num_workers: int) -> bool:
        """Run inside the DataLoader workers (a CPU device with workers): the work is spread over them.

        On a GPU the workers only read bytes and the device does the rest in the training process.
        """
        return self.device.type == "cpu" and num_workers > 0

    def batches(self, dataset, batch_sampler, **loader_options):
        """The finished training batches of ``batch_sampler``'s keys (one item per batch of ``(index, seed)``).

        A DataLoader (``loader_options``: ``num_workers``, ``pin_memory``, ...) over
        :class:`JpegBatches`; the rest of the pipeline runs in its workers where
        :meth:`in_workers`, else here on ``self.device``.
        """
        in_workers = self.in_workers(loader_options.get("num_workers", 0))
        loader = torch.utils.data.DataLoader(JpegBatches(dataset, finish=self if in_workers else None),
                                             sampler=batch_sampler, batch_size=None, **loader_options)
        if in_workers:
            yield from loader
            return
        for host in loader:
            yield self(host)  # decode, crop, normalise, encode on the device

    def decode(self, encoded: list[torch.Tensor], image_ids: torch.Tensor) -> list[torch.Tensor]:
        """``(3, H, W)`` uint8 on the device for every image; JPEGs in one batched decode call."""
        from torchvision.io import ImageReadMode, decode_image, decode_jpeg

        ids = image_ids.tolist()  # a host tensor from the worker: no device sync
        out: list[torch.Tensor | None] = [None] * len(encoded)
        if self._carry is not None and ids and ids[0] == self._carry[0]:
            out[0] = self._carry[1]  # the image the previous batch ended with
        todo = [i for i in range(len(encoded)) if out[i] is None]
        jpegs = [i for i in todo if encoded[i].dim() == 1 and encoded[i][:2].tolist() == [255, 216]]
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", DeprecationWarning)  # torchvision 0.29+ deprecates its decoders
            if jpegs:
                decoded = decode_jpeg([encoded[i] for i in jpegs], mode=ImageReadMode.RGB,
                                      device=self.device if self.device.type == "cuda" else "cpu")
                for i, im in zip(jpegs, decoded):
                    out[i] = im.to(self.device, non_blocking=True)
            for i in todo:
                if out[i] is None:  # decoded by the worker (PNG ...), or another encoding
                    t = encoded[i]
                    out[i] = (t if t.dim() == 3 else decode_image(t, mode=ImageReadMode.RGB)).to(self.device,
                                                                                                 non_blocking=True)
        self.decoded += sum(1 for i in todo if encoded[i].dim() == 1)
        if ids:
            self._carry = (ids[-1], out[-1])
        return out  # type: ignore[return-value]

    def __call__(self, host: dict) -> dict:
        from ikd_edu.codec import encode_heatmaps

        dev = self.device
        images = self.decode(host["encoded"], host["image_ids"])
        crops = warp_persons(images, host["image_of"], host["matrix"], self.input_size, self.warp)  # (B, 3, H, W) 0..1
        heatmaps, weight = encode_heatmaps(host["keypoints"].to(dev, non_blocking=True),
                                           host["visible"].to(dev, non_blocking=True),
                                           heatmap_size=self.heatmap_size, sigma=self.sigma, unbiased=self.unbiased)
        return {
            "image": to_network_input(crops, self.channel_order),  # (B, 3, H, W), RGB or BGR
            "heatmaps": heatmaps,  # (B, K, h, w)
            "target_weight": weight,  # (B, K)
            "index": host["index"],
            "flipped": host["flipped"],
            "center": host["center"],
            "scale": host["scale"],
            "rotation": host["rotation"],
        }
