"""An image fuzz corpus built in code with Pillow: what clients really send, and what breaks
decoders (truncated, corrupt, bombs), each with the answer the API owes it."""

from __future__ import annotations

import io
import random
import struct
import zlib
from dataclasses import dataclass
from typing import Any

from PIL import Image, ImageDraw

ACCEPTED = 202
UNDECODABLE = 422
TOO_LARGE = 413
UNSUPPORTED = 415
BAD_REQUEST = 400


@dataclass(frozen=True)
class CorpusImage:
    """One image of the corpus, the media type a client would label it with, and the status
    (and error code, for a refusal) that submitting it must get."""

    name: str
    data: bytes
    mime: str
    status: int
    code: str | None = None


def picture(mode: str = "RGB", size: tuple[int, int] = (64, 48)) -> Image.Image:
    """A small picture with some structure (a shape on a background) in `mode`."""
    image = Image.new("RGB", size, "white")
    draw = ImageDraw.Draw(image)
    width, height = size
    draw.ellipse((width // 5, height // 5, width * 4 // 5, height * 4 // 5), fill="red")
    return image.convert(mode)


def encode(image: Image.Image, fmt: str, **options: Any) -> bytes:
    """`image` saved in `fmt`."""
    buffer = io.BytesIO()
    image.save(buffer, format=fmt, **options)
    return buffer.getvalue()


def png_chunk(kind: bytes, payload: bytes) -> bytes:
    """One PNG chunk: length, type, data, CRC."""
    crc = struct.pack(">I", zlib.crc32(kind + payload))
    return struct.pack(">I", len(payload)) + kind + payload + crc


def declared_size_png(width: int, height: int) -> bytes:
    """A PNG of a few dozen bytes whose header declares `width` x `height` RGB pixels."""
    header = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    pixels = zlib.compress(b"\x00" * 64)
    return (
        b"\x89PNG\r\n\x1a\n"
        + png_chunk(b"IHDR", header)
        + png_chunk(b"IDAT", pixels)
        + png_chunk(b"IEND", b"")
    )


def declared_size_gif(width: int, height: int) -> bytes:
    """A 1x1 GIF whose logical screen (what Pillow reports as its size) is `width` x `height`."""
    data = bytearray(encode(Image.new("P", (1, 1)), "GIF"))
    data[6:10] = struct.pack("<HH", width, height)
    return bytes(data)


def animated(fmt: str) -> bytes:
    """Three frames of different colours, looping."""
    frames = [Image.new("RGB", (32, 32), colour) for colour in ("red", "green", "blue")]
    return encode(frames[0], fmt, save_all=True, append_images=frames[1:], duration=100, loop=0)


def palette_with_transparency() -> bytes:
    """A palette PNG whose colour 0 is transparent (a tRNS chunk)."""
    return encode(picture("P"), "PNG", transparency=0)


def exif_rotated_jpeg() -> bytes:
    """A JPEG stored sideways with EXIF orientation 6 (rotate 90° clockwise to view)."""
    exif = Image.Exif()
    exif[0x0112] = 6
    return encode(picture(size=(48, 64)), "JPEG", exif=exif.tobytes())


def mpo() -> bytes:
    """A two-image MPO (the format of stereo cameras and many phone JPEGs)."""
    left, right = picture(), picture().transpose(Image.Transpose.FLIP_LEFT_RIGHT)
    return encode(left, "MPO", save_all=True, append_images=[right])


def corrupt_png() -> bytes:
    """A PNG signature and header, then garbage where the pixel data should be."""
    valid = encode(picture(), "PNG")
    noise = random.Random(7).randbytes(len(valid) - 33)
    return valid[:33] + noise


def bad_pixel_data_png() -> bytes:
    """A PNG with a sound header and well-formed chunks whose pixel data is not zlib."""
    header = struct.pack(">IIBBBBB", 16, 16, 8, 2, 0, 0, 0)
    noise = random.Random(8).randbytes(200)
    return (
        b"\x89PNG\r\n\x1a\n"
        + png_chunk(b"IHDR", header)
        + png_chunk(b"IDAT", noise)
        + png_chunk(b"IEND", b"")
    )


def build_corpus() -> list[CorpusImage]:
    """Every image of the corpus with its expected status."""
    png = encode(picture(), "PNG")
    jpeg = encode(picture(), "JPEG")
    return [
        CorpusImage("png", png, "image/png", ACCEPTED),
        CorpusImage("jpeg", jpeg, "image/jpeg", ACCEPTED),
        CorpusImage("webp", encode(picture(), "WEBP"), "image/webp", ACCEPTED),
        CorpusImage("gif", encode(picture("P"), "GIF"), "image/gif", ACCEPTED),
        CorpusImage("animated-gif", animated("GIF"), "image/gif", ACCEPTED),
        CorpusImage("animated-webp", animated("WEBP"), "image/webp", ACCEPTED),
        CorpusImage("cmyk-jpeg", encode(picture("CMYK"), "JPEG"), "image/jpeg", ACCEPTED),
        CorpusImage("png-16-bit", encode(picture("I;16"), "PNG"), "image/png", ACCEPTED),
        CorpusImage("png-palette-transparent", palette_with_transparency(), "image/png", ACCEPTED),
        CorpusImage("mpo", mpo(), "image/jpeg", ACCEPTED),
        CorpusImage("jpeg-exif-rotated", exif_rotated_jpeg(), "image/jpeg", ACCEPTED),
        CorpusImage("png-grayscale", encode(picture("L"), "PNG"), "image/png", ACCEPTED),
        CorpusImage("png-la", encode(picture("LA"), "PNG"), "image/png", ACCEPTED),
        CorpusImage("png-rgba", encode(picture("RGBA"), "PNG"), "image/png", ACCEPTED),
        CorpusImage("png-1-bit", encode(picture("1"), "PNG"), "image/png", ACCEPTED),
        CorpusImage("png-1x1", encode(picture(size=(1, 1)), "PNG"), "image/png", ACCEPTED),
        # The model's processor refuses an aspect ratio over 200:1; 200:1 itself is fine.
        CorpusImage("png-200-to-1", encode(picture(size=(3, 600)), "PNG"), "image/png", ACCEPTED),
        CorpusImage(
            "png-300-to-1", encode(picture(size=(2, 600)), "PNG"), "image/png", BAD_REQUEST
        ),
        CorpusImage(
            "png-truncated", png[: len(png) // 2], "image/png", UNDECODABLE, "invalid_image"
        ),
        CorpusImage(
            "jpeg-truncated", jpeg[: len(jpeg) // 2], "image/jpeg", UNDECODABLE, "invalid_image"
        ),
        CorpusImage("png-corrupt", corrupt_png(), "image/png", UNDECODABLE, "invalid_image"),
        CorpusImage(
            "png-bad-pixel-data", bad_pixel_data_png(), "image/png", UNDECODABLE, "invalid_image"
        ),
        CorpusImage("empty", b"", "image/png", UNDECODABLE, "invalid_image"),
        CorpusImage(
            "random-bytes",
            random.Random(0).randbytes(2048),
            "image/png",
            UNDECODABLE,
            "invalid_image",
        ),
        # Bombs: tiny files declaring far more pixels than the caps allow. The first is past
        # Pillow's own bomb limit; the second only past the deployment's `max_image_pixels`.
        CorpusImage(
            "png-bomb-30000x30000",
            declared_size_png(30000, 30000),
            "image/png",
            TOO_LARGE,
            "payload_too_large",
        ),
        CorpusImage(
            "png-bomb-7000x7000",
            declared_size_png(7000, 7000),
            "image/png",
            TOO_LARGE,
            "payload_too_large",
        ),
        CorpusImage(
            "gif-bomb-65535x65535",
            declared_size_gif(65535, 65535),
            "image/gif",
            TOO_LARGE,
            "payload_too_large",
        ),
        CorpusImage(
            "tiff",
            encode(picture(), "TIFF"),
            "image/tiff",
            UNSUPPORTED,
            "unsupported_image_format",
        ),
        CorpusImage(
            "bmp", encode(picture(), "BMP"), "image/bmp", UNSUPPORTED, "unsupported_image_format"
        ),
        CorpusImage(
            "ico", encode(picture(), "ICO"), "image/x-icon", UNSUPPORTED, "unsupported_image_format"
        ),
    ]
