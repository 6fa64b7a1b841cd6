"""Page images: the one place an item's image file is opened, checked, bounded and hashed.

An OCR item's page image travels with it through sampling, judging, pairs, export, training, the
attractor view and evaluation; every step reads it through :func:`load_image`, so a missing,
unreadable or non-image file gives the same clear reason everywhere (the item is skipped with it),
and a huge scan is brought down to the configured pixel budget before any model sees it.
:func:`image_hash` is recorded with each candidate: a page file changed after sampling is detected
before it is trained on.
"""

from __future__ import annotations

import base64
import hashlib
import io
import math
from pathlib import Path

__all__ = ["DEFAULT_MAX_PIXELS", "ImageProblem", "data_url", "image_hash", "load_image"]

# About a megapixel: an A4 page at ~100 dpi, legible for OCR VLMs, and far below what fills a GPU.
DEFAULT_MAX_PIXELS = 1_000_000
# Pillow refuses to decode above this (a decompression bomb guard); scans beyond it are refused by name.
DECODE_LIMIT_PIXELS = 180_000_000


class ImageProblem(Exception):
    """An item's image cannot be used (missing, unreadable, not an image): the item is skipped with this reason."""


def image_hash(path: str | Path | None) -> str | None:
    """The content hash (sha256, hex) of an image file; None when the item has none or it cannot be read."""
    if not path:
        return None
    try:
        h = hashlib.sha256()
        with open(path, "rb") as f:
            for block in iter(lambda: f.read(1 << 20), b""):
                h.update(block)
        return h.hexdigest()
    except OSError:
        return None


def load_image(path: str | Path | None, max_pixels: int | None = DEFAULT_MAX_PIXELS):
    """The page as an RGB PIL image, EXIF-rotated, scaled down (aspect kept) to at most ``max_pixels``.

    Raises :class:`ImageProblem` naming the file when there is none, it is missing, or it is not an image."""
    from PIL import Image, ImageOps, UnidentifiedImageError

    if not path:
        raise ImageProblem("the item has no page image")
    p = Path(path)
    if not p.is_file():
        raise ImageProblem(f"page image {p} is missing")
    old = Image.MAX_IMAGE_PIXELS
    Image.MAX_IMAGE_PIXELS = DECODE_LIMIT_PIXELS // 2  # Pillow raises at twice this
    try:
        with Image.open(p) as im:
            if im.width * im.height > DECODE_LIMIT_PIXELS:
                raise ImageProblem(f"page image {p} is {im.width}×{im.height}: too large to decode safely")
            if max_pixels and im.format == "JPEG":
                im.draft("RGB", (im.width, im.height))
            img = ImageOps.exif_transpose(im).convert("RGB")
    except ImageProblem:
        raise
    except (UnidentifiedImageError, Image.DecompressionBombError) as e:
        raise ImageProblem(f"page image {p} is not a readable image ({e})") from None
    except (OSError, ValueError, SyntaxError) as e:
        raise ImageProblem(f"page image {p} cannot be read ({type(e).__name__}: {e})") from None
    finally:
        Image.MAX_IMAGE_PIXELS = old
    if img.width < 1 or img.height < 1:
        raise ImageProblem(f"page image {p} is empty")
    if max_pixels and img.width * img.height > max_pixels:
        scale = math.sqrt(max_pixels / (img.width * img.height))
        img = img.resize((max(1, int(img.width * scale)), max(1, int(img.height * scale))), Image.Resampling.LANCZOS)
    return img


def data_url(img) -> str:
    """A PIL image as a ``data:image/png;base64,…`` URL (an OpenAI-style ``image_url`` part)."""
    buf = io.BytesIO()
    img.save(buf, format="PNG")
    return "data:image/png;base64," + base64.b64encode(buf.getvalue()).decode("ascii")
