"""Image loading: any file a user hands us -> an RGB ``uint8`` array ``(H, W, 3)``.

JPEG and PNG go through ``torchvision.io.decode_image`` (libjpeg-turbo / libpng), which was
measured faster than PIL on this project's 2-core CPU (torch 2.14 / torchvision 0.29 /
Pillow 13, single thread, mean of 300 decodes of a JPEG at quality 90):

=============  ===========  ====================
image          PIL          torchvision.io
=============  ===========  ====================
192x192 JPEG   0.32 ms      0.22 ms
640x480 JPEG   2.45 ms      1.72 ms
=============  ===========  ====================

torchvision 0.29 deprecates its image decoders (in favour of TorchCodec); when they are
gone, or refuse a file, PIL takes over. Everything else also goes to PIL, which knows every
mode: ``L``, ``LA``, ``P`` (palette), ``RGBA``, ``CMYK``, ``I;16``, ``I``, ``F`` ... are all
converted to RGB (alpha is dropped, 16-bit and 32-bit values are rescaled to 0..255).

A missing file raises :class:`ikd_edu.errors.UserError` (a ``FileNotFoundError`` subclass
too, so ``except FileNotFoundError`` works) naming the path; a corrupt or truncated file
raises :class:`UserError` naming the path and the decoder's complaint.
"""
from __future__ import annotations

import os
import warnings
from pathlib import Path

import numpy as np
import torch

from ikd_edu.errors import UserError

_FAST_SUFFIXES = {".jpg", ".jpeg", ".png"}


class ImageNotFoundError(UserError, FileNotFoundError):
    """An image file that is not there (both a :class:`UserError` and a ``FileNotFoundError``)."""


_TV_DECODE = None  # torchvision's (decode_image, RGB mode), False when unavailable


def _torchvision_decoder():
    global _TV_DECODE
    if _TV_DECODE is None:
        try:  # deprecated in torchvision 0.29 (moving to TorchCodec): PIL takes over once it is gone
            from torchvision.io import ImageReadMode, decode_image

            _TV_DECODE = (decode_image, ImageReadMode.RGB)
        except Exception:  # ImportError, missing image extension, ...
            _TV_DECODE = False
    return _TV_DECODE


def _decode_torchvision(data: bytes) -> np.ndarray | None:
    """Decode JPEG/PNG bytes with torchvision; ``None`` if it cannot (caller falls back to PIL)."""
    decoder = _torchvision_decoder()
    if not decoder:
        return None
    decode_image, rgb = decoder
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", DeprecationWarning)  # torchvision 0.29+ warns on every call
            chw = decode_image(torch.frombuffer(bytearray(data), dtype=torch.uint8), mode=rgb)
    except (RuntimeError, ValueError):
        return None
    if chw.dtype == torch.uint16:  # 16-bit PNG: rescale to 0..255
        chw = ((chw.to(torch.int32) * 255 + 32767) // 65535).to(torch.uint8)
    elif chw.dtype != torch.uint8:
        return None
    # (3, H, W) -> (H, W, 3) view; torch.from_numpy(...).permute(2, 0, 1) is contiguous again.
    return chw.permute(1, 2, 0).numpy()


def _pil_to_rgb(im) -> np.ndarray:
    """A PIL image of any mode -> ``(H, W, 3)`` uint8."""
    if im.mode in ("I;16", "I;16L", "I;16B", "I;16N", "I", "F"):
        a = np.asarray(im, dtype=np.float64)
        top = 65535.0 if im.mode.startswith("I;16") else max(float(a.max()), 1.0)
        if im.mode == "F" and top <= 1.0:
            top = 1.0  # float images in 0..1
        a = np.clip(np.rint(a * (255.0 / top)), 0, 255).astype(np.uint8)
        return np.repeat(a[:, :, None], 3, axis=2)
    if im.mode != "RGB":
        im = im.convert("RGB")  # L, LA, P, PA, RGBA, CMYK, YCbCr, 1, ...
    return np.asarray(im)


def load_rgb(path: str | os.PathLike) -> np.ndarray:
    """Read an image file as RGB.

    Args:
        path: image file (JPEG and PNG are fastest; anything PIL opens works).

    Returns:
        ``(H, W, 3)`` uint8 array (may be a non-contiguous view; do not write into it).

    Raises:
        ImageNotFoundError: the file does not exist (a :class:`UserError`).
        UserError: the file is not a readable image (corrupt, truncated, not an image).
    """
    path = Path(path)
    try:
        data = path.read_bytes()
    except FileNotFoundError:
        raise ImageNotFoundError(f"image not found: {path}") from None
    except IsADirectoryError:
        raise UserError(f"expected an image file but {path} is a folder") from None
    except OSError as exc:
        raise UserError(f"cannot read image {path}: {exc.strerror or exc}") from None
    if not data:
        raise UserError(f"image file {path} is empty (0 bytes); re-download or regenerate it")
    if path.suffix.lower() in _FAST_SUFFIXES:
        arr = _decode_torchvision(data)
        if arr is not None:
            return arr
    import io

    from PIL import Image, UnidentifiedImageError

    try:
        with Image.open(io.BytesIO(data)) as im:
            im.load()  # raises on truncated files (ImageFile.LOAD_TRUNCATED_IMAGES is False)
            return _pil_to_rgb(im)
    except UnidentifiedImageError:
        raise UserError(f"{path} is not an image file PIL can read (corrupt or wrong format)") from None
    except (OSError, SyntaxError, ValueError) as exc:  # truncated, broken chunks, ...
        raise UserError(f"cannot decode image {path} (corrupt or truncated?): {exc}") from None


def read_image_size(path: str | os.PathLike) -> tuple[int, int]:
    """``(H, W)`` of an image from its header only (fast: no decode). Raises like :func:`load_rgb`."""
    from PIL import Image, UnidentifiedImageError

    path = Path(path)
    try:
        with Image.open(path) as im:
            w, h = im.size
    except FileNotFoundError:
        raise ImageNotFoundError(f"image not found: {path}") from None
    except UnidentifiedImageError:
        raise UserError(f"{path} is not an image file PIL can read (corrupt or wrong format)") from None
    except (OSError, SyntaxError, ValueError) as exc:
        raise UserError(f"cannot read image header of {path}: {exc}") from None
    return h, w
