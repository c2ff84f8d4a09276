"""Image decoding and resizing shared by training and serving (numpy + Pillow, no torch).

One function turns encoded bytes into the network's input pixels, so that a model sees the
same preprocessing when it is trained and when it serves:

1. decode with Pillow (PNG, JPEG, GIF, BMP, TIFF, WebP; the first frame of an animation);
2. convert to RGB (``channels=3``) or grey (``channels=1``): alpha is dropped, palettes and
   16-bit grey are expanded;
3. if ``resize`` is set, scale so that the shorter side is ``resize`` pixels, then take the
   centred ``height x width`` crop; otherwise scale straight to ``height x width`` (bilinear,
   antialiased when shrinking) unless the image already has that size;
4. return ``uint8`` pixels shaped ``(channels, height, width)``.
"""

from __future__ import annotations

import io

import numpy as np
from PIL import Image

FORMATS = ("PNG", "JPEG", "GIF", "BMP", "TIFF", "WEBP")
# Decoding is refused above this many pixels (a small PNG can inflate to gigabytes).
MAX_PIXELS = 25_000_000


class BadImage(ValueError):
    """The bytes are not an image we can use; ``str(exc)`` says why."""


class ImageTooLarge(BadImage):
    """The image decodes to more than ``MAX_PIXELS`` pixels."""


def decode(data: bytes) -> Image.Image:
    """Decode fully (so that truncation is detected here), or raise ``BadImage``."""
    if not data:
        raise BadImage("empty image")
    try:
        img = Image.open(io.BytesIO(data), formats=FORMATS)
    except Image.UnidentifiedImageError:
        raise BadImage("not an image in a supported format (" + ", ".join(FORMATS) + ")") from None
    except Exception as exc:  # Pillow raises many types on bad headers
        raise BadImage(f"cannot decode image: {exc}") from None
    width, height = img.size
    if width < 1 or height < 1:
        raise BadImage(f"image has no pixels ({width}x{height})")
    if width * height > MAX_PIXELS:
        raise ImageTooLarge(f"image of {width}x{height} pixels is larger than the limit of "
                            f"{MAX_PIXELS} pixels")
    try:
        img.load()
    except Exception as exc:  # truncation: OSError, SyntaxError, ...
        raise BadImage(f"cannot decode {img.format} image (truncated or corrupt): {exc}") from None
    return img


def _to_mode(img: Image.Image, channels: int) -> Image.Image:
    if img.mode in ("I", "I;16", "I;16B", "I;16L", "I;16N", "F"):
        arr = np.asarray(img, dtype=np.float64)
        top = arr.max() if arr.size else 0.0
        if top > 255:
            arr = arr * (255.0 / (65535.0 if top <= 65535 else top))
        img = Image.fromarray(np.clip(arr, 0, 255).astype(np.uint8), mode="L")
    if img.mode == "P" and "transparency" in img.info:
        img = img.convert("RGBA")
    target = "RGB" if channels == 3 else "L"
    return img if img.mode == target else img.convert(target)


def to_pixels(img: Image.Image, image_shape: tuple[int, int, int],
              resize: int | None = None) -> np.ndarray:
    """Pixels as ``uint8`` array ``(C, H, W)`` after mode conversion and resizing."""
    channels, height, width = image_shape
    img = _to_mode(img, channels)
    if resize is not None:
        w, h = img.size
        scale = resize / min(w, h)
        new = (max(width, round(w * scale)), max(height, round(h * scale)))
        if new != img.size:
            img = img.resize(new, Image.Resampling.BILINEAR)
        left = (img.size[0] - width) // 2
        top = (img.size[1] - height) // 2
        img = img.crop((left, top, left + width, top + height))
    elif img.size != (width, height):
        img = img.resize((width, height), Image.Resampling.BILINEAR)
    arr = np.asarray(img, dtype=np.uint8)
    if arr.ndim == 2:
        arr = arr[:, :, None]
    return np.ascontiguousarray(arr.transpose(2, 0, 1))


def load_pixels(data: bytes, image_shape: tuple[int, int, int],
                resize: int | None = None) -> np.ndarray:
    """``decode`` then ``to_pixels``; raises ``BadImage``."""
    return to_pixels(decode(data), image_shape, resize)
