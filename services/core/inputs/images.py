"""Image intake: data URLs, remote URLs and uploads to checked bytes; bytes to RGB images.

Size and pixel limits are checked before any pixel is decoded: Pillow's `open` reads only
the header, so a decompression bomb is refused from its declared size.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import io
import re
import struct
import warnings
import zlib
from dataclasses import dataclass

from PIL import Image as PILImage
from PIL import ImageOps

from services.core.config import Settings
from services.core.errors import (
    InvalidRequestError,
    PayloadTooLargeError,
    UndecodableImageError,
    UnsupportedImageError,
)
from services.core.inputs.decode_budget import decode_budget, decoded_bytes
from services.core.inputs.fetch_slots import fetch_slots
from services.core.inputs.model_limits import model_limits
from services.core.outbound import fetch

ACCEPTED_FORMATS = {
    "PNG": "image/png",
    "JPEG": "image/jpeg",
    # Phone cameras save JPEGs with extra frames (a depth map, a preview) as MPO.
    "MPO": "image/jpeg",
    "WEBP": "image/webp",
    "GIF": "image/gif",
}
PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
# Inflated PNG data is produced (and dropped) this much at a time: memory stays flat.
INFLATE_PIECE_BYTES = 1 << 20
MIB = 1 << 20
DATA_URL = re.compile(
    r"^data:(?P<mime>[\w.+-]+/[\w.+-]+)?(?P<params>(;[\w-]+=[^;,]*)*)(?P<b64>;base64)?,", re.I
)


@dataclass(frozen=True)
class CheckedImage:
    """Image bytes that passed every check, with what was learnt about them."""

    data: bytes
    sha256: str
    media_type: str
    width: int
    height: int


def decode_data_url(url: str, settings: Settings) -> bytes:
    """The bytes of a base64 `data:` URL, refusing oversized ones before decoding."""
    match = DATA_URL.match(url)
    if not match or not match.group("b64"):
        raise InvalidRequestError(
            "image data URL must look like data:image/png;base64,...", param="image"
        )
    payload = url[match.end() :]
    if len(payload) * 3 // 4 > settings.max_image_bytes:
        raise PayloadTooLargeError(f"image is over {settings.max_image_bytes} bytes", param="image")
    try:
        return base64.b64decode(payload, validate=True)
    except (binascii.Error, ValueError) as exc:
        raise InvalidRequestError("image data URL is not valid base64", param="image") from exc


def fetch_image_url(url: str, settings: Settings) -> bytes:
    """Download a remote image under the outbound address rules, deadline and byte cap.

    At most `max_concurrent_fetches` run at once in this process, and `tenant_max_fetches`
    of one tenant (see `services.core.inputs.fetch_slots`): past either the request is
    refused at once, so slow image servers cannot take every request thread.
    """
    slots = fetch_slots(settings.max_concurrent_fetches, settings.tenant_max_fetches)
    with slots.slot():
        response = fetch(
            url,
            allowlist=settings.outbound_allowed,
            timeout_s=settings.fetch_timeout_s,
            max_bytes=settings.max_image_bytes,
        )
    if response.status >= 400:
        raise InvalidRequestError(f"image URL answered HTTP {response.status}", param="image")
    return response.body


def image_bytes_from_reference(reference: str, settings: Settings) -> bytes:
    """The bytes behind an image reference: a `data:` URL or an http(s) URL."""
    if not isinstance(reference, str) or not reference:
        raise InvalidRequestError("image must be a data: URL or an http(s) URL", param="image")
    if reference.startswith("data:"):
        return decode_data_url(reference, settings)
    if reference.startswith(("http://", "https://")):
        return fetch_image_url(reference, settings)
    raise InvalidRequestError("image must be a data: URL or an http(s) URL", param="image")


def check_image(data: bytes, settings: Settings) -> CheckedImage:
    """Check format, byte size, pixel count and shape from the header, then the data's
    integrity without keeping a decoded copy (the worker decodes it, once)."""
    if len(data) > settings.max_image_bytes:
        raise PayloadTooLargeError(f"image is over {settings.max_image_bytes} bytes", param="image")
    if not data:
        raise UndecodableImageError("image is empty", param="image")
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", PILImage.DecompressionBombWarning)
            image = PILImage.open(io.BytesIO(data))
    except (PILImage.DecompressionBombError, PILImage.DecompressionBombWarning) as exc:
        raise PayloadTooLargeError("image declares too many pixels", param="image") from exc
    except Exception as exc:  # Pillow raises many types on corrupt headers
        raise UndecodableImageError("data is not a decodable image", param="image") from exc
    if image.format not in ACCEPTED_FORMATS:
        raise UnsupportedImageError(
            f"image format {image.format} is not accepted (PNG, JPEG, WebP, GIF)", param="image"
        )
    width, height = image.size
    if width * height > settings.max_image_pixels:
        raise PayloadTooLargeError(
            f"image is {width}x{height}, over {settings.max_image_pixels} pixels", param="image"
        )
    model_limits(settings.model).check_image_shape(width, height)
    check_integrity(image, data)
    return CheckedImage(
        data=data,
        sha256=hashlib.sha256(data).hexdigest(),
        media_type=ACCEPTED_FORMATS[image.format],
        width=width,
        height=height,
    )


def check_integrity(image: PILImage.Image, data: bytes) -> None:
    """A 422 for truncated or corrupt image data, at a fraction of a full decode's cost.

    PNG: every chunk's checksum, then the pixel stream inflated and thrown away (no image is
    built). JPEG (and MPO): a decode at 1/8 scale, which reads every entropy-coded block.
    Other formats: the first frame.
    """
    try:
        if image.format == "PNG":
            image.verify()
            inflate_png_pixels(data)
            return
        if image.format in ("JPEG", "MPO"):
            image.draft(image.mode, (max(image.width // 8, 1), max(image.height // 8, 1)))
        image.load()
    except Exception as exc:
        raise UndecodableImageError("image data is truncated or corrupt", param="image") from exc
    finally:
        image.close()


def inflate_png_pixels(data: bytes) -> None:
    """Inflate a PNG's pixel stream (its IDAT chunks) a piece at a time, keeping nothing;
    a ValueError when the stream is corrupt, ends early, or holds more than the header's
    size (a small file inflating to far more than its image is refused after that much)."""
    expected = png_raw_size(data)
    inflater = zlib.decompressobj()
    inflated = 0
    position = len(PNG_SIGNATURE)
    while position + 8 <= len(data):
        (length,) = struct.unpack(">I", data[position : position + 4])
        kind = data[position + 4 : position + 8]
        if kind == b"IDAT":
            pending = data[position + 8 : position + 8 + length]
            while pending:
                try:
                    inflated += len(inflater.decompress(pending, INFLATE_PIECE_BYTES))
                except zlib.error as exc:
                    raise ValueError("corrupt PNG pixel data") from exc
                if inflated > expected:
                    raise ValueError("PNG pixel data is larger than its image")
                pending = inflater.unconsumed_tail
        elif kind == b"IEND":
            break
        position += 12 + length  # length, type, data, checksum
    if not inflater.eof or inflated != expected:
        raise ValueError("PNG pixel data ends early")


# Samples per pixel of each PNG colour type (grey, RGB, palette, grey + alpha, RGBA).
PNG_CHANNELS = {0: 1, 2: 3, 3: 1, 4: 2, 6: 4}
# Adam7 interlacing: each pass's (first column, first row, column step, row step).
ADAM7_PASSES = [
    (0, 0, 8, 8),
    (4, 0, 8, 8),
    (0, 4, 4, 8),
    (2, 0, 4, 4),
    (0, 2, 2, 4),
    (1, 0, 2, 2),
    (0, 1, 1, 2),
]


def png_raw_size(data: bytes) -> int:
    """The bytes a PNG's pixel stream inflates to, from its header: each row of each pass
    is one filter byte and its packed samples."""
    width, height, bit_depth, colour_type, _, _, interlace = struct.unpack(">IIBBBBB", data[16:29])
    bits_per_pixel = PNG_CHANNELS.get(colour_type, 4) * bit_depth
    passes = ADAM7_PASSES if interlace else [(0, 0, 1, 1)]
    total = 0
    for first_column, first_row, column_step, row_step in passes:
        columns = max(0, -(-(width - first_column) // column_step))
        rows = max(0, -(-(height - first_row) // row_step))
        if columns and rows:
            total += rows * (1 + -(-columns * bits_per_pixel // 8))
    return total


def fit_image(image: CheckedImage, side: int, settings: Settings) -> CheckedImage:
    """The image downscaled, aspect ratio kept, so that its longer side is at most `side`
    pixels (unchanged when it fits, or when `side` is 0).

    Done once, when the request is accepted: the smaller image is what is stored, what the
    worker decodes, and (by its hash) what the cache key names. A JPEG stays a JPEG
    (quality 95); anything else becomes a PNG. The decode holds memory from the process's
    decode budget (see `services.core.inputs.decode_budget`) while it runs.
    """
    if side <= 0 or max(image.width, image.height) <= side:
        return image
    scale = jpeg_draft_scale(image, side) if image.media_type == "image/jpeg" else 1
    budget = decode_budget(settings.decode_memory_mb * MIB)
    with budget.reserve(decoded_bytes(image.width // scale, image.height // scale)):
        decoded = to_rgb(image.data, at_least=side)
        decoded.thumbnail((side, side), PILImage.Resampling.LANCZOS)
    buffer = io.BytesIO()
    if image.media_type == "image/jpeg":
        decoded.save(buffer, "JPEG", quality=95)
    else:
        decoded.save(buffer, "PNG")
    data = buffer.getvalue()
    return CheckedImage(
        data=data,
        sha256=hashlib.sha256(data).hexdigest(),
        media_type="image/jpeg" if image.media_type == "image/jpeg" else "image/png",
        width=decoded.width,
        height=decoded.height,
    )


def to_rgb(data: bytes, at_least: int | None = None) -> PILImage.Image:
    """Decode checked bytes to upright RGB (EXIF orientation applied; the first frame of an
    animation or MPO; transparency on white; 16-bit and CMYK converted).

    `at_least`: a JPEG may be decoded at a reduced scale that keeps both sides at least this
    many pixels (much faster, for an image about to be downscaled anyway).
    """
    image: PILImage.Image = PILImage.open(io.BytesIO(data))
    image.seek(0)
    if at_least is not None and image.format in ("JPEG", "MPO"):
        image.draft("RGB", (at_least, at_least))
    if at_least is not None:
        image = reduced(image, at_least)
    # In place: without it, an image with no EXIF orientation is copied whole.
    ImageOps.exif_transpose(image, in_place=True)
    upright = image
    if upright.mode in ("I;16", "I;16B", "I;16L", "I"):
        # 16-bit grey: scale to 8 bits (a plain convert would clip everything above 255).
        upright = upright.point(lambda value: value / 256).convert("L")
    if upright.mode in ("RGBA", "LA", "PA") or "transparency" in upright.info:
        rgba = upright.convert("RGBA")
        background = PILImage.new("RGBA", rgba.size, (255, 255, 255, 255))
        return PILImage.alpha_composite(background, rgba).convert("RGB")
    return upright.convert("RGB")


def reduced(image: PILImage.Image, at_least: int) -> PILImage.Image:
    """The image shrunk by a whole factor that keeps both sides at least `at_least` pixels,
    in its own mode, before any conversion to RGB: the conversion then copies a small image,
    not a large one (a 1-bit image becomes greyscale first, a palette one RGBA)."""
    factor = min(image.width, image.height) // max(1, at_least)
    if factor < 2:
        return image
    if image.mode == "1":
        image = image.convert("L")
    elif image.mode in ("P", "PA"):
        image = image.convert("RGBA")
    try:
        return image.reduce(factor)
    except ValueError:  # a mode `reduce` does not take (16-bit grey): converted whole
        return image


def jpeg_draft_scale(image: CheckedImage, side: int) -> int:
    """The scale (1, 2, 4 or 8) a JPEG is decoded at to keep both sides at least `side`."""
    scale = 1
    while scale < 8 and min(image.width, image.height) // (scale * 2) >= side:
        scale *= 2
    return scale
