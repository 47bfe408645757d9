"""Image intake: limits checked from the header, formats, EXIF, GIF frames."""

from __future__ import annotations

import base64
import io
import struct
import zlib
from types import SimpleNamespace

import pytest
from PIL import Image

from services.core.config import Settings
from services.core.errors import (
    InvalidRequestError,
    PayloadTooLargeError,
    ServiceUnavailableError,
    UndecodableImageError,
    UnsupportedImageError,
)
from services.core.inputs import images
from services.core.inputs.decode_budget import DecodeBudget
from services.core.inputs.images import (
    check_image,
    decode_data_url,
    image_bytes_from_reference,
    to_rgb,
)
from tests.integration.test_bad_input import png_bomb
from tests.support import shape_png

SETTINGS = Settings(_env_file=None)  # type: ignore[call-arg]


def encode(image: Image.Image, fmt: str, **kwargs: object) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, format=fmt, **kwargs)
    return buffer.getvalue()


@pytest.mark.parametrize("fmt", ["PNG", "JPEG", "WEBP", "GIF"])
def test_accepted_formats(fmt: str) -> None:
    checked = check_image(encode(Image.new("RGB", (30, 20), "red"), fmt), SETTINGS)
    assert (checked.width, checked.height) == (30, 20)
    assert checked.media_type == f"image/{fmt.lower()}"
    assert len(checked.sha256) == 64


def test_unsupported_format_is_415() -> None:
    with pytest.raises(UnsupportedImageError):
        check_image(encode(Image.new("RGB", (4, 4)), "BMP"), SETTINGS)


def test_decompression_bomb_is_refused_from_its_header() -> None:
    with pytest.raises(PayloadTooLargeError):
        check_image(png_bomb(), SETTINGS)


def test_pixel_cap_is_configurable() -> None:
    small_cap = Settings(_env_file=None, max_image_pixels=100)  # type: ignore[call-arg]
    with pytest.raises(PayloadTooLargeError):
        check_image(shape_png(size=64), small_cap)


def test_byte_cap_checked_before_base64_decoding() -> None:
    tiny_cap = Settings(_env_file=None, max_image_bytes=10)  # type: ignore[call-arg]
    with pytest.raises(PayloadTooLargeError):
        decode_data_url("data:image/png;base64," + "A" * 400, tiny_cap)


@pytest.mark.parametrize(
    ("reference", "error"),
    [
        ("data:image/png;base64,%%%", InvalidRequestError),
        ("data:image/png,rawdata", InvalidRequestError),
        ("file:///etc/passwd", InvalidRequestError),
        ("", InvalidRequestError),
    ],
)
def test_bad_references(reference: str, error: type[Exception]) -> None:
    with pytest.raises(error):
        image_bytes_from_reference(reference, SETTINGS)


def test_garbage_and_truncated_data_are_422() -> None:
    with pytest.raises(UndecodableImageError):
        check_image(b"hello world", SETTINGS)
    with pytest.raises(UndecodableImageError):
        check_image(shape_png()[:80], SETTINGS)
    with pytest.raises(UndecodableImageError):
        check_image(b"", SETTINGS)


def test_exif_orientation_is_applied() -> None:
    image = Image.new("RGB", (40, 20), "blue")
    exif = Image.Exif()
    exif[0x0112] = 6  # rotated 90° clockwise
    rgb = to_rgb(encode(image, "JPEG", exif=exif.tobytes()))
    assert rgb.size == (20, 40)


def test_gif_gives_its_first_frame() -> None:
    frames = [Image.new("RGB", (8, 8), color) for color in ("red", "blue")]
    buffer = io.BytesIO()
    frames[0].save(buffer, format="GIF", save_all=True, append_images=frames[1:])
    rgb = to_rgb(buffer.getvalue())
    red, green, blue = rgb.getpixel((0, 0))  # type: ignore[misc]
    assert red > 200 and blue < 50


def test_data_url_round_trip() -> None:
    data = shape_png()
    assert (
        decode_data_url("data:image/png;base64," + base64.b64encode(data).decode(), SETTINGS)
        == data
    )


def png_of_raw_rows(width: int, height: int, raw: bytes, interlace: int = 0) -> bytes:
    """An RGB PNG whose pixel stream is `raw` (rows with their filter bytes), compressed."""

    def chunk(kind: bytes, payload: bytes) -> bytes:
        crc = struct.pack(">I", zlib.crc32(kind + payload))
        return struct.pack(">I", len(payload)) + kind + payload + crc

    header = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, interlace)
    return (
        b"\x89PNG\r\n\x1a\n"
        + chunk(b"IHDR", header)
        + chunk(b"IDAT", zlib.compress(raw))
        + chunk(b"IEND", b"")
    )


class CountingInflater:
    """zlib's inflater, adding up the bytes it hands out in `inflated`."""

    inflated = 0

    def __init__(self) -> None:
        self.inner = zlib.decompressobj()

    def decompress(self, data: bytes, max_length: int = 0) -> bytes:
        out = self.inner.decompress(data, max_length)
        CountingInflater.inflated += len(out)
        return out

    def __getattr__(self, name: str) -> object:
        return getattr(self.inner, name)


def test_a_png_inflating_past_its_image_is_refused_one_piece_in(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # 32x32 pixels declared, 2 MB of pixel data: refused once past the image's 3,104 bytes,
    # not after inflating all of it.
    monkeypatch.setattr(
        images, "zlib", SimpleNamespace(decompressobj=CountingInflater, error=zlib.error)
    )
    monkeypatch.setattr(CountingInflater, "inflated", 0)
    rows = b"\x00" * (32 * (1 + 32 * 3))
    with pytest.raises(UndecodableImageError):
        check_image(png_of_raw_rows(32, 32, rows + b"\x00" * 2_000_000), SETTINGS)
    assert 0 < CountingInflater.inflated <= len(rows) + images.INFLATE_PIECE_BYTES
    assert check_image(png_of_raw_rows(32, 32, rows), SETTINGS).width == 32


def test_an_interlaced_png_is_checked_pass_by_pass() -> None:
    width, height, passes = 13, 11, [(0, 0, 8, 8), (4, 0, 8, 8), (0, 4, 4, 8), (2, 0, 4, 4)]
    passes += [(0, 2, 2, 4), (1, 0, 2, 2), (0, 1, 1, 2)]
    raw = b""
    for column, row, column_step, row_step in passes:
        columns = -(-(width - column) // column_step)
        rows = -(-(height - row) // row_step)
        raw += (b"\x00" + b"\x80" * columns * 3) * rows
    assert check_image(png_of_raw_rows(width, height, raw, interlace=1), SETTINGS).height == 11
    with pytest.raises(UndecodableImageError):
        check_image(png_of_raw_rows(width, height, raw[:-5], interlace=1), SETTINGS)


def test_decodes_share_a_memory_budget_and_wait_for_room() -> None:
    budget = DecodeBudget(100)
    with budget.reserve(60, timeout_s=1):
        with pytest.raises(ServiceUnavailableError) as refused, budget.reserve(60, 0.05):
            pass
        assert refused.value.code == "decode_capacity_exceeded"
        with budget.reserve(40, timeout_s=0.05):
            assert budget.reserved == 100
    # A decode larger than the whole budget runs once nothing else holds any of it.
    with budget.reserve(500, timeout_s=0.05):
        assert budget.reserved == 100
    assert budget.reserved == 0


def test_a_large_palette_or_1_bit_image_is_reduced_before_it_becomes_rgb() -> None:
    for mode in ("1", "P", "L", "RGBA"):
        buffer = io.BytesIO()
        Image.new(mode, (4000, 3000)).save(buffer, "PNG")
        rgb = to_rgb(buffer.getvalue(), at_least=1000)
        assert rgb.mode == "RGB" and rgb.height == 1000 and rgb.width in (1333, 1334), mode
