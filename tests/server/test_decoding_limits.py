"""The server's decoding cannot allocate gigabytes (issue 16, items 2 and 10): refused formats and huge headers
answer 400 before decoding, images are kept at the model's size as soon as they are decoded (scores unchanged),
decoded pixels in flight have a server-wide budget (503 + Retry-After), and MemoryError is the server's fault."""

from __future__ import annotations

import base64
import io
import struct
import threading
import time
import zlib
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import pytest
from helpers import ServerThread, http, png_b64, random_image
from PIL import Image as PILImage
from PIL import ImageFile

from rewarddance.backend.cli import build_parser, serve_settings
from rewarddance.backend.media import Image, load_image_bytes
from rewarddance.backend.server.app import SERVICE_KEY, create_app
from rewarddance.backend.server.decoding import KeptSize, PixelBudget, VisualDecoder
from rewarddance.backend.server.errors import ApiError
from rewarddance.backend.server.settings import ServerSettings, SettingsError

from .server_helpers import tiny_settings

SIDE = 8192


def b64(data: bytes) -> str:
    return base64.b64encode(data).decode()


def encoded(fmt: str, img: PILImage.Image | None = None) -> bytes:
    buf = io.BytesIO()
    (img or random_image(32, 48)).save(buf, fmt)
    return buf.getvalue()


def _chunk(kind: bytes, data: bytes) -> bytes:
    return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))


def png_claiming(width: int, height: int) -> bytes:
    """A PNG header claiming width x height (valid CRC) with almost no pixel data."""
    ihdr = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    return (
        b"\x89PNG\r\n\x1a\n" + _chunk(b"IHDR", ihdr) + _chunk(b"IDAT", zlib.compress(b"\0" * 64)) + _chunk(b"IEND", b"")
    )


def ico_claiming(side: int) -> bytes:
    """An ICO whose one entry is a PNG claiming side x side (the attack's 13000 x 13000 icon)."""
    png = png_claiming(side, side)
    return struct.pack("<HHH", 0, 1, 1) + struct.pack("<BBBBHHII", 0, 0, 0, 0, 1, 32, len(png), 22) + png


def bmp_claiming(side: int) -> bytes:
    data = bytearray(encoded("BMP"))
    data[18:26] = struct.pack("<ii", side, side)
    return bytes(data)


@pytest.fixture(scope="module")
def solid_idat():
    """The compressed pixel data of a SIDE x SIDE palette image whose every pixel is palette entry 0."""
    row = b"\0" + b"\0" * SIDE  # filter byte + indices
    comp = zlib.compressobj(9)
    return comp.compress(row * SIDE) + comp.flush()


def solid_png(idat: bytes, colour: tuple[int, int, int]) -> bytes:
    """A solid SIDE x SIDE PNG of `colour` (a palette PNG: distinct bytes per colour, one shared IDAT)."""
    ihdr = struct.pack(">IIBBBBB", SIDE, SIDE, 8, 3, 0, 0, 0)
    return (
        b"\x89PNG\r\n\x1a\n"
        + _chunk(b"IHDR", ihdr)
        + _chunk(b"PLTE", bytes(colour))
        + _chunk(b"IDAT", idat)
        + _chunk(b"IEND", b"")
    )


@pytest.fixture(scope="module")
def server(tiny_dirs):
    """A running server on the tiny Qwen2.5-VL (default decode limits), its model loaded."""
    with ServerThread(create_app(tiny_settings(tiny_dirs, max_delay_ms=5))) as srv:
        status, _, _ = http("POST", srv.url + "/v1/score", {"prompt": "x", "images": [png_b64(random_image(16, 16))]})
        assert status == 200
        yield srv


def service(srv):
    return srv.app[SERVICE_KEY]


def score(srv, images, **extra):
    return http("POST", srv.url + "/v1/score", {"prompt": "a cat", "images": images, **extra})


def assert_healthy(srv):
    assert http("GET", srv.url + "/health")[0] == 200
    status, body, _ = score(srv, [png_b64(random_image(24, 24, seed=99))])
    assert status == 200, body
    assert service(srv).decoder.inflight.used == 0


# --- formats and headers ------------------------------------------------------------------------------------------
@pytest.mark.filterwarnings("ignore::PIL.Image.DecompressionBombWarning")
@pytest.mark.parametrize(
    "body, message",
    [
        (ico_claiming(13000), "is a ICO image; only PNG, JPEG or WebP"),
        (bmp_claiming(13000), "is a BMP image; only PNG, JPEG or WebP"),
        (encoded("TIFF"), "is a TIFF image"),
        (encoded("EPS"), "is a EPS image"),
        (encoded("GIF"), "is a GIF image"),
        (png_claiming(13000, 13000), "13000x13000 is over the limit of 67108864 pixels"),
    ],
    ids=["ico-13000", "bmp-13000", "tiff", "eps", "gif", "png-13000"],
)
def test_refused_formats_and_huge_headers_answer_400_before_decoding(server, body, message):
    started = time.perf_counter()
    status, answer, _ = score(server, [b64(body)])
    assert time.perf_counter() - started < 2.0
    assert status == 400 and answer["error"]["type"] == "invalid_image"
    assert "images[0]" in answer["error"]["message"] and message in answer["error"]["message"]
    assert_healthy(server)


# --- MemoryError ----------------------------------------------------------------------------------------------------
def test_memory_error_while_decoding_is_503_not_the_clients_fault(server, monkeypatch):
    def out_of_memory(self):
        raise MemoryError

    monkeypatch.setattr(ImageFile.ImageFile, "load", out_of_memory)
    status, answer, headers = score(server, [png_b64(random_image(20, 30, seed=5))])
    monkeypatch.undo()
    assert status == 503 and answer["error"]["type"] == "out_of_memory"
    assert "images[0]" in answer["error"]["message"] and "retry" in answer["error"]["message"]
    assert headers["Retry-After"] == "1"
    assert_healthy(server)


def test_memory_error_while_stacking_video_frames_is_503(server, monkeypatch):
    import rewarddance.backend.server.decoding as decoding

    def out_of_memory(*_):
        raise MemoryError

    monkeypatch.setattr(decoding, "pil_to_tensor", out_of_memory)
    frame = png_b64(random_image(20, 20, seed=6))
    status, answer, _ = score(server, [{"frames": [frame, frame], "fps": 4}])
    monkeypatch.undo()
    assert status == 503 and answer["error"]["type"] == "out_of_memory"
    assert_healthy(server)


# --- scores ---------------------------------------------------------------------------------------------------------
def test_images_that_fit_score_bit_identically_to_a_full_decode(server, reward_models):
    rm = reward_models("qwen2_5_vl")
    data = encoded("PNG", random_image(48, 64, seed=3))
    status, answer, _ = score(server, [b64(data)])
    assert status == 200
    assert answer["scores"] == rm.score([load_image_bytes(data)], "a cat").scores
    kept = VisualDecoder(2**26).request(KeptSize.of_model(rm)).image(data, "x")
    assert np.array_equal(np.asarray(kept.pil), np.asarray(load_image_bytes(data).pil))


def test_huge_images_are_kept_model_sized_and_score_as_before(server, reward_models):
    rm = reward_models("qwen2_5_vl")
    src = random_image(1200, 1600, seed=4)
    data = encoded("PNG", src)
    status, answer, _ = score(server, [b64(data)])
    assert status == 200
    assert answer["scores"] == rm.score([Image(pil=src)], "a cat").scores  # the processor's own resize: identical
    kept = VisualDecoder(2**26).request(KeptSize.of_model(rm)).image(data, "x")
    assert kept.pil.size == (504, 364) and kept.pil.width * kept.pil.height <= 256 * 28 * 28


@pytest.mark.parametrize("family", ["qwen2_vl", "qwen2_5_vl", "qwen3_vl", "internvl"])
def test_kept_size_mirrors_each_processor(reward_models, family):
    """Qwen families: the kept image is the processor's input exactly. InternVL: same tile grid, identical tiles
    (only the overview thumbnail is made from the kept canvas instead of the original)."""
    rm = reward_models(family)
    kept = KeptSize.of_model(rm)
    encode = rm.vlm.family.encode_images
    for seed, (h, w) in enumerate([(1200, 1600), (777, 1333), (3000, 700)]):
        src = random_image(h, w, seed=seed)
        small = load_image_bytes(encoded("PNG", src), fit=kept, resample=kept.resample)
        assert small.pil.width * small.pil.height < h * w
        full, mine = encode([Image(pil=src)])[0], encode([small])[0]
        assert full.num_tokens == mine.num_tokens
        if family == "internvl":
            assert torch_equal(full.pixel_values[:-1], mine.pixel_values[:-1])
            assert (full.pixel_values[-1] - mine.pixel_values[-1]).abs().max() < 0.25  # measured <= 0.09
        else:
            assert torch_equal(full.pixel_values, mine.pixel_values)


def torch_equal(a, b) -> bool:
    return a.shape == b.shape and bool((a == b).all())


def test_a_huge_jpeg_decodes_at_reduced_scale_and_stays_close(reward_models):
    rm = reward_models("qwen2_5_vl")
    kept = KeptSize.of_model(rm)
    data = encoded("JPEG", random_image(3000, 4000, seed=2))
    seen: list[int] = []
    small = load_image_bytes(data, fit=kept, resample=kept.resample, admit=seen.append)
    assert seen == [2000 * 1500] and small.pil.size == (504, 364)
    full, mine = (rm.vlm.family.encode_images([img])[0] for img in (load_image_bytes(data), small))
    assert full.num_tokens == mine.num_tokens
    assert (full.pixel_values - mine.pixel_values).abs().max() < 0.2  # measured 0.07-0.13 (normalised units)


# --- the in-flight budget ---------------------------------------------------------------------------------------
def test_pixel_budget_admits_a_request_alone_and_refuses_company():
    budget = PixelBudget(100)
    budget.acquire(80, 0, "a")
    budget.acquire(150, 80, "a")  # alone in flight: admitted whatever the size
    with pytest.raises(ApiError) as info:
        budget.acquire(1, 0, "b[0]")
    assert info.value.status == 503 and info.value.headers["Retry-After"] == "1"
    assert "max_inflight_pixels (100)" in info.value.message and "b[0]" in info.value.message
    budget.release(230)
    budget.acquire(100, 0, "b")
    assert budget.used == 100 and budget.peak == 230


def test_request_decoder_releases_everything_and_refuses_after_release():
    decoder = VisualDecoder(2**26, max_inflight_pixels=10**6)
    req = decoder.request(KeptSize("area", 1000))
    img = req.image(encoded("PNG", random_image(100, 200)), "images[0]")
    assert img.pil.width * img.pil.height <= 1000
    assert decoder.inflight.used == req.held == img.pil.width * img.pil.height  # the full size only while decoding
    assert decoder.inflight.peak == 100 * 200
    req.release()
    assert decoder.inflight.used == 0
    with pytest.raises(ApiError, match="ended while it was being decoded"):
        req.image(encoded("PNG", random_image(10, 20, seed=1)), "images[1]")  # a worker still decoding stops
    assert decoder.inflight.used == 0


def test_a_failing_request_gives_its_pixels_back(server):
    status, answer, _ = score(server, [png_b64(random_image(30, 30, seed=8)), b64(encoded("BMP"))])
    assert status == 400 and "images[1]" in answer["error"]["message"]
    assert service(server).decoder.inflight.used == 0


def test_six_concurrent_requests_of_four_solid_8192_pngs_stay_bounded(server, solid_idat):
    """The attack: 6 x 4 solid 8192x8192 PNGs (6.6 MB uploaded) reached 7.6 GB. Now one request decodes at a
    time at full size (the budget holds 64 Mpx, one such image) and keeps model-sized copies; the others are
    refused with 503 + Retry-After before they decode anything, and succeed when retried."""
    bodies = [
        {"prompt": "a wall", "images": [b64(solid_png(solid_idat, (r, 40 * i, 7))) for i in range(4)]} for r in range(6)
    ]
    decoder = service(server).decoder
    decoder.inflight.peak = 0
    limit = service(server).settings.max_inflight_pixels
    assert limit == 64 * 2**20 == SIDE * SIDE
    barrier = threading.Barrier(len(bodies))

    def send(body):
        barrier.wait()
        return http("POST", server.url + "/v1/score", body)

    started = time.perf_counter()
    with ThreadPoolExecutor(len(bodies)) as pool:
        results = list(pool.map(send, bodies))
    elapsed = time.perf_counter() - started
    statuses = sorted(r[0] for r in results)
    assert 200 in statuses and set(statuses) <= {200, 503}, [r[1] for r in results]
    for status, answer, headers in results:
        if status == 503:
            assert answer["error"]["type"] == "server_busy" and headers["Retry-After"] == "1"
            assert "max_inflight_pixels" in answer["error"]["message"]
    kept = 256 * 28 * 28  # the tiny model's max_pixels
    assert decoder.inflight.peak <= limit + 3 * kept  # never more than one full-size image at a time
    assert decoder.inflight.used == 0
    assert elapsed < 60
    refused = next((b for b, r in zip(bodies, results) if r[0] == 503), None)
    if refused is not None:  # nothing lost: the client's retry is served
        status, answer, _ = http("POST", server.url + "/v1/score", refused)
        assert status == 200 and len(answer["scores"]) == 4
    assert_healthy(server)


# --- settings -----------------------------------------------------------------------------------------------------
def test_max_inflight_pixels_setting_and_flag():
    parsed = serve_settings(build_parser().parse_args(["serve", "--model", "m=/x", "--max-inflight-pixels", "1000"]))
    assert parsed.max_inflight_pixels == 1000
    assert ServerSettings().max_inflight_pixels == 64 * 2**20
    with pytest.raises(SettingsError, match="max_inflight_pixels must be a positive number"):
        ServerSettings(max_inflight_pixels=0).validate(require_models=False)
