"""Decoding that cannot allocate gigabytes (issue 16, items 2 and 10): format allow-lists, header size checks,
downscaling as soon as an image is decoded, and animations decoded frame by frame up to a budget."""

from __future__ import annotations

import io
import struct
import time
import zlib

import numpy as np
import pytest
from helpers import random_image
from PIL import EpsImagePlugin, GifImagePlugin, ImageFile, WebPImagePlugin
from PIL import Image as PILImage

from rewarddance.backend.media import (
    MAX_ANIMATION_FRAMES,
    MediaError,
    fit_size,
    fit_within,
    frame_budget,
    load_image_bytes,
    load_image_file,
    load_video_file,
    sniff_format,
)

REFUSED = ["BMP", "ICO", "TIFF", "GIF", "TGA", "JPEG2000", "QOI", "EPS", "ICNS", "DDS", "PCX", "PPM", "SGI"]
NAMED = {"BMP": "BMP", "ICO": "ICO", "TIFF": "TIFF", "GIF": "GIF", "JPEG2000": "JPEG 2000", "QOI": "QOI", "EPS": "EPS"}


def encoded(fmt: str, img: PILImage.Image | None = None, **kw) -> bytes:
    """`img` (a small random picture by default) saved as `fmt`."""
    buf = io.BytesIO()
    (img or random_image(32, 48)).save(buf, fmt, **kw)
    return buf.getvalue()


def png_claiming(width: int, height: int) -> bytes:
    """A PNG whose header (with a valid CRC) claims width x height; the pixel data is one tiny chunk."""
    ihdr = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    chunk = lambda kind, data: (  # noqa: E731
        struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))
    )
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", zlib.compress(b"\0" * 64)) + chunk(b"IEND", b"")


def ico_claiming(side: int) -> bytes:
    """An ICO whose only entry is a PNG claiming side x side pixels (the attack's 13000 x 13000 icon)."""
    png = png_claiming(side, side)
    return struct.pack("<HHH", 0, 1, 1) + struct.pack("<BBBBHHII", 0, 0, 0, 0, 1, 32, len(png), 22) + png


def bmp_claiming(side: int) -> bytes:
    """A BMP whose header claims side x side pixels (the pixel data is missing)."""
    data = bytearray(encoded("BMP"))
    data[18:26] = struct.pack("<ii", side, side)
    return bytes(data)


@pytest.fixture
def decodes(monkeypatch):
    """Counts pixel decodes: every ImageFile.load() call that still had data to decode."""
    calls: list[str] = []
    original = ImageFile.ImageFile.load

    def counting(self):
        if self.tile:
            calls.append(self.format)
        return original(self)

    monkeypatch.setattr(ImageFile.ImageFile, "load", counting)
    return calls


@pytest.mark.parametrize("fmt", REFUSED)
def test_uploads_refuse_every_format_but_png_jpeg_webp_before_decoding(fmt, decodes, monkeypatch):
    def never(*_):
        raise AssertionError("the EPS plugin must never look at client bytes")

    monkeypatch.setattr(EpsImagePlugin.EpsImageFile, "_open", never)  # Ghostscript sits behind it
    try:
        data = encoded(fmt)
    except (OSError, KeyError, ValueError) as exc:  # an encoder this Pillow lacks
        pytest.skip(f"this Pillow cannot write {fmt}: {exc}")
    with pytest.raises(MediaError, match="PNG, JPEG or WebP") as info:
        load_image_bytes(data, "images[0]")
    assert "images[0]" in str(info.value)
    if fmt in NAMED:
        assert f"is a {NAMED[fmt]} image" in str(info.value)
    assert decodes == []


@pytest.mark.parametrize("fmt", ["PNG", "JPEG", "WEBP"])
def test_uploads_accept_png_jpeg_webp(fmt):
    img = load_image_bytes(encoded(fmt))
    assert img.pil.size == (48, 32) and img.pil.mode == "RGB"


def test_files_accept_bmp_and_tiff_but_refuse_others(tmp_path, monkeypatch):
    for fmt, name in (("BMP", "x.bmp"), ("TIFF", "x.tif")):
        (tmp_path / name).write_bytes(encoded(fmt))
        assert load_image_file(tmp_path / name).pil.size == (48, 32)
    monkeypatch.setattr(EpsImagePlugin.EpsImageFile, "_open", lambda *_: pytest.fail("EPS plugin ran"))
    for fmt, name in (("EPS", "evil.png"), ("ICO", "x.ico"), ("GIF", "still.gif")):
        (tmp_path / name).write_bytes(encoded(fmt))
        with pytest.raises(MediaError, match=r"PNG, JPEG, WebP, BMP or TIFF"):
            load_image_file(tmp_path / name)


@pytest.mark.filterwarnings("ignore::PIL.Image.DecompressionBombWarning")
@pytest.mark.parametrize(
    "body", [ico_claiming(13000), bmp_claiming(13000), png_claiming(13000, 13000)], ids=["ico", "bmp", "png"]
)
def test_huge_headers_are_refused_before_decoding_and_fast(body, decodes):
    started = time.perf_counter()
    with pytest.raises(MediaError, match="PNG, JPEG or WebP|over the limit of 67108864 pixels"):
        load_image_bytes(body, "images[0]", max_pixels=64 * 2**20)
    assert time.perf_counter() - started < 0.5
    assert decodes == []


@pytest.mark.filterwarnings("ignore::PIL.Image.DecompressionBombWarning")
def test_every_allowed_format_is_size_checked_from_its_header(decodes):
    big = random_image(1200, 1000)
    for fmt in ("PNG", "JPEG", "WEBP"):
        with pytest.raises(MediaError, match=r"1000x1200 is over the limit of 1000000 pixels"):
            load_image_bytes(encoded(fmt, big), "img", max_pixels=10**6)
    jpeg = bytearray(encoded("JPEG"))
    sof = jpeg.index(b"\xff\xc0")
    jpeg[sof + 5 : sof + 9] = struct.pack(">HH", 13000, 13000)  # the frame header's height and width
    with pytest.raises(MediaError, match="13000x13000 is over the limit"):
        load_image_bytes(bytes(jpeg), "img", max_pixels=64 * 2**20)
    assert decodes == []


def test_images_that_fit_are_returned_exactly_as_decoded():
    for fmt in ("PNG", "JPEG", "WEBP"):
        data = encoded(fmt, random_image(300, 200, seed=3))
        plain = np.asarray(load_image_bytes(data).pil)
        kept = np.asarray(load_image_bytes(data, fit=fit_within(300 * 200)).pil)
        assert np.array_equal(plain, kept)


def test_large_images_are_downscaled_with_the_processor_filter_once_decoded():
    src = random_image(1200, 1600, seed=4)
    img = load_image_bytes(encoded("PNG", src), fit=fit_within(200704), resample=3)
    assert img.pil.size == fit_size(1600, 1200, 200704) == (517, 387)
    expected = np.asarray(src.resize((517, 387), PILImage.BICUBIC))
    assert np.array_equal(np.asarray(img.pil), expected)


def test_a_large_jpeg_is_decoded_at_a_reduced_scale():
    seen = []
    img = load_image_bytes(encoded("JPEG", random_image(3000, 4000)), fit=fit_within(200704), admit=seen.append)
    assert seen == [2000 * 1500]  # DCT scale 1/2: still twice the kept size per side, 4x fewer pixels decoded
    assert img.pil.size == (517, 387)


def test_admit_sees_the_pixels_before_decoding_and_can_refuse(decodes):
    class Busy(Exception):
        pass

    def refuse(pixels):
        assert pixels == 32 * 48 and decodes == []
        raise Busy

    with pytest.raises(Busy):
        load_image_bytes(encoded("PNG"), admit=refuse)
    assert decodes == []


def test_memory_error_while_decoding_is_not_a_media_error(monkeypatch):
    def out_of_memory(self):
        raise MemoryError

    monkeypatch.setattr(ImageFile.ImageFile, "load", out_of_memory)
    with pytest.raises(MemoryError):
        load_image_bytes(encoded("PNG"))


def test_sniff_names_formats_from_their_first_bytes():
    assert sniff_format(encoded("WEBP")[:16]) == "WEBP"
    assert sniff_format(encoded("PNG")[:16]) == "PNG"
    assert sniff_format(b"%!PS-Adobe-3.0 EPSF") == "EPS"
    assert sniff_format(b"hello world") is None


def gif_frames(n: int, side: int = 16) -> list[PILImage.Image]:
    """`n` distinct small frames."""
    return [PILImage.new("RGB", (side, side), (i % 256, (i * 7) % 256, (i * 13) % 256)) for i in range(n)]


def test_a_1000_frame_gif_decodes_only_the_frame_budget(tmp_path, decodes, monkeypatch):
    frames = gif_frames(1000)
    frames[0].save(tmp_path / "long.gif", save_all=True, append_images=frames[1:], duration=40, loop=0)
    assert (tmp_path / "long.gif").stat().st_size < 100_000
    decoded: list[int] = []
    original = GifImagePlugin.GifImageFile.load

    def tracking(self):
        if self.tile:
            decoded.append(self.tell())
        return original(self)

    monkeypatch.setattr(GifImagePlugin.GifImageFile, "load", tracking)
    started = time.perf_counter()
    clip = load_video_file(tmp_path / "long.gif")
    assert time.perf_counter() - started < 5
    assert clip.frames.shape == (MAX_ANIMATION_FRAMES, 16, 16, 3)
    assert max(decoded) < MAX_ANIMATION_FRAMES and len(set(decoded)) == MAX_ANIMATION_FRAMES
    assert clip.fps == pytest.approx(25.0)
    short = load_video_file(tmp_path / "long.gif", max_frames=10)
    assert short.frames.shape[0] == 10
    assert short.frames[3, 0, 0].tolist() == pytest.approx([3 / 255, 21 / 255, 39 / 255], abs=1e-6)


def test_an_animated_webp_decodes_only_the_frame_budget(tmp_path, monkeypatch):
    frames = gif_frames(300, side=8)
    frames[0].save(tmp_path / "long.webp", save_all=True, append_images=frames[1:], duration=50, lossless=True)
    calls = []
    original = WebPImagePlugin.WebPImageFile._get_next

    def counting(self):
        calls.append(1)
        return original(self)

    monkeypatch.setattr(WebPImagePlugin.WebPImageFile, "_get_next", counting)
    clip = load_video_file(tmp_path / "long.webp", max_frames=40)
    assert clip.frames.shape == (40, 8, 8, 3) and len(calls) <= 41
    assert clip.frames[5, 0, 0].tolist() == pytest.approx([5 / 255, 35 / 255, 65 / 255], abs=1e-6)


def test_frame_budget_counts_pixels_over_all_frames():
    assert frame_budget(16, 16, "x", 256, 2**26) == 256
    assert frame_budget(4096, 4096, "x", 256, 2**26) == 4
    with pytest.raises(MediaError, match="over the limit of 1000 pixels"):
        frame_budget(100, 100, "x.gif", 256, 1000)


def test_animations_refuse_other_formats(tmp_path):
    (tmp_path / "fake.gif").write_bytes(encoded("BMP"))
    with pytest.raises(MediaError, match="GIF or WebP"):
        load_video_file(tmp_path / "fake.gif")
