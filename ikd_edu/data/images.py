"""Image loading: any file a user hands us -> an RGB ``uint8`` array ``(H, W, 3)``.

JPEG and PNG go through ``torchvision.io.decode_image`` (libjpeg-turbo / libpng), which
decodes faster than PIL (figures: benchmarks/README.md).
torchvision 0.29 deprecates its image decoders (in favour of TorchCodec); when they are
gone, or refuse a file, PIL takes over. Everything else also goes to PIL, which knows every
mode: ``L``, ``LA``, ``P`` (palette), ``RGBA``, ``CMYK``, ``I;16``, ``I``, ``F`` ... are all
converted to RGB (alpha is dropped, 16-bit and 32-bit values are rescaled to 0..255).

A missing file raises :class:`ikd_edu.errors.UserError` (a ``FileNotFoundError`` subclass
too, so ``except FileNotFoundError`` works) naming the path; a corrupt or truncated file
raises :class:`UserError` naming the path and the decoder's complaint.

**Pixel limit.** An image larger than :func:`max_image_pixels` (default
``DEFAULT_MAX_PIXELS`` = 50 megapixels, ~150 MB decoded; COCO's largest are 0.4 MP) is
refused from its header, before anything is decoded: a 20000 x 20000 "decompression bomb"
would need 1.2 GB. Raise it with the environment variable ``IKD_MAX_IMAGE_PIXELS=N`` (or
``ikd-edu data check --max-pixels N``) when you really have such images and the memory.
"""
from __future__ import annotations

import contextlib
import os
import warnings
from pathlib import Path

import numpy as np
import torch

from ikd_edu.errors import UserError

_FAST_SUFFIXES = {".jpg", ".jpeg", ".png"}
DEFAULT_MAX_PIXELS = 50_000_000
MAX_PIXELS_ENV = "IKD_MAX_IMAGE_PIXELS"


def max_image_pixels() -> int:
    """The pixel limit: ``$IKD_MAX_IMAGE_PIXELS`` if set (a positive integer), else ``DEFAULT_MAX_PIXELS``."""
    text = os.environ.get(MAX_PIXELS_ENV, "").strip().replace("_", "")
    if not text:
        return DEFAULT_MAX_PIXELS
    if not text.isdigit() or int(text) < 1:
        raise UserError(f"{MAX_PIXELS_ENV}={text!r}: must be a positive number of pixels, e.g. 50000000")
    return int(text)


def check_pixels(path, height: int, width: int) -> None:
    """UserError when an image of ``height x width`` is over :func:`max_image_pixels`."""
    limit = max_image_pixels()
    if height * width > limit:
        raise UserError(
            f"image {path} is {width}x{height} ({height * width / 1e6:.3g} megapixels), over the limit of "
            f"{limit / 1e6:g} megapixels; downscale it, or raise the limit with {MAX_PIXELS_ENV}=N if you have "
            "the memory"
        )


_JPEG_SOF = {0xC0, 0xC1, 0xC2, 0xC3, 0xC5, 0xC6, 0xC7, 0xC9, 0xCA, 0xCB, 0xCD, 0xCE, 0xCF}


def header_size(data: bytes) -> tuple[int, int] | None:
    """``(H, W)`` from the header of PNG or JPEG bytes (microseconds, no decoding); None if not found."""
    if data[:8] == b"\x89PNG\r\n\x1a\n" and data[12:16] == b"IHDR":
        return int.from_bytes(data[20:24], "big"), int.from_bytes(data[16:20], "big")
    if data[:2] != b"\xff\xd8":
        return None
    i, n = 2, len(data)
    while i + 9 <= n:  # walk the JPEG segments up to the start-of-frame marker
        if data[i] != 0xFF:
            return None
        marker = data[i + 1]
        if marker == 0xFF:
            i += 1
            continue
        if marker == 0x01 or 0xD0 <= marker <= 0xD8:  # markers without a length
            i += 2
            continue
        if marker in _JPEG_SOF:
            return int.from_bytes(data[i + 5:i + 7], "big"), int.from_bytes(data[i + 7:i + 9], "big")
        i += 2 + int.from_bytes(data[i + 2:i + 4], "big")
    return None


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
    return decode_rgb(path, read_image_file(path))


def read_image_file(path: str | os.PathLike) -> bytes:
    """An image file's bytes; :class:`ImageNotFoundError` / :class:`UserError` naming the path when it can't be read or is empty."""
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
    return data


def decode_rgb(path: Path, data: bytes) -> np.ndarray:
    """:func:`load_rgb` of bytes already read from ``path`` (named in errors): ``(H, W, 3)`` uint8."""
    size = header_size(data)
    if size is not None:
        check_pixels(path, *size)
        if path.suffix.lower() in _FAST_SUFFIXES:
            arr = _decode_torchvision(data)
            if arr is not None:
                return arr
    import io

    from PIL import Image

    with _pil_errors(path, "cannot decode image {path} (corrupt or truncated?): {exc}"):
        im = Image.open(io.BytesIO(data))
        with im:
            check_pixels(path, im.size[1], im.size[0])  # from the header, before decoding
            im.load()  # raises on truncated files (ImageFile.LOAD_TRUNCATED_IMAGES is False)
            return _pil_to_rgb(im)


@contextlib.contextmanager
def _pil_errors(path: Path, otherwise: str):
    """PIL's exceptions inside the block as one-line errors; ``otherwise`` (``{path}``, ``{exc}``) for the rest.

    PIL's own pixel limit is silenced: :func:`check_pixels` applies ours, which says how to raise it.
    """
    from PIL import Image, UnidentifiedImageError

    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)
            yield
    except Image.DecompressionBombError:
        raise UserError(f"image {path} is too large to decode safely (a decompression bomb?); downscale it, "
                        f"or raise the limit with {MAX_PIXELS_ENV}=N") from None
    except FileNotFoundError:
        raise ImageNotFoundError(f"image not found: {path}") from None
    except UnidentifiedImageError:
        raise UserError(f"{path} is not an image file PIL can read (corrupt or wrong format)") from None
    except (OSError, SyntaxError, ValueError) as exc:  # truncated, broken chunks, ...
        raise UserError(otherwise.format(path=path, exc=exc)) from None


def read_image_size(path: str | os.PathLike) -> tuple[int, int]:
    """``(H, W)`` of an image from its header only (fast: no decode). Raises like :func:`load_rgb`."""
    from PIL import Image

    path = Path(path)
    with _pil_errors(path, "cannot read image header of {path}: {exc}"), Image.open(path) as im:
        w, h = im.size
    check_pixels(path, h, w)
    return h, w
