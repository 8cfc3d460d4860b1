"""Test helpers shared by several test modules."""

from __future__ import annotations

from pathlib import Path

import numpy as np
from PIL import Image as PILImage


def random_image(h: int, w: int, seed: int = 0) -> PILImage.Image:
    """A smooth random RGB PIL image (so resizing differences stay realistic)."""
    rng = np.random.default_rng(seed)
    small = rng.integers(0, 256, size=(max(2, h // 8), max(2, w // 8), 3), dtype=np.uint8)
    return PILImage.fromarray(small).resize((w, h), PILImage.BILINEAR)


def pil_image_processor(family: str, ckpt):
    """The checkpoint's PIL-based transformers image processor (the `*Pil` class in transformers 5,
    the slow PIL/NumPy class in 4.5x), built from its preprocessor_config.json."""
    import json

    cfg = json.loads((ckpt / "preprocessor_config.json").read_text())
    cfg.pop("image_processor_type")
    if family == "internvl":
        try:
            from transformers.models.got_ocr2.image_processing_pil_got_ocr2 import GotOcr2ImageProcessorPil as cls
        except ImportError:
            from transformers.models.got_ocr2.image_processing_got_ocr2 import GotOcr2ImageProcessor as cls
    else:
        try:
            from transformers.models.qwen2_vl.image_processing_pil_qwen2_vl import Qwen2VLImageProcessorPil as cls
        except ImportError:
            from transformers.models.qwen2_vl.image_processing_qwen2_vl import Qwen2VLImageProcessor as cls
    return cls(**cfg)


class ServerThread:
    """Run an aiohttp app of the scoring backend on a free port in a background thread (its own loop)."""

    def __init__(self, app):
        import asyncio
        import threading

        self.app = app
        self.loop = asyncio.new_event_loop()
        self._ready = threading.Event()
        self._thread = threading.Thread(target=self._main, daemon=True)
        self.runner = None
        self.url = ""

    def _main(self):
        import asyncio

        asyncio.set_event_loop(self.loop)
        self.loop.run_until_complete(self._start())
        self._ready.set()
        self.loop.run_forever()

    async def _start(self):
        from aiohttp import web

        self.runner = web.AppRunner(self.app, handler_cancellation=True, shutdown_timeout=10)
        await self.runner.setup()
        site = web.TCPSite(self.runner, "127.0.0.1", 0)
        await site.start()
        host, port = self.runner.addresses[0][:2]
        self.url = f"http://{host}:{port}"

    def call(self, coro):
        """Run a coroutine on the server's loop and return its result."""
        import asyncio

        return asyncio.run_coroutine_threadsafe(coro, self.loop).result(timeout=120)

    def __enter__(self):
        self._thread.start()
        if not self._ready.wait(60):
            raise RuntimeError("the test server did not start")
        return self

    def __exit__(self, *exc):
        self.call(self.runner.cleanup())
        self.loop.call_soon_threadsafe(self.loop.stop)
        self._thread.join(30)


def http(method: str, url: str, body=None, headers=None, raw: bool = False):
    """One HTTP request with the standard library: (status, decoded JSON or text, headers).

    A body is sent as `Content-Type: application/json` unless `headers` name another type.
    """
    import json
    import urllib.error
    import urllib.request

    data = body if isinstance(body, (bytes, type(None))) else json.dumps(body).encode()
    headers = dict(headers or {})
    if data is not None and not any(k.lower() == "content-type" for k in headers):
        headers["Content-Type"] = "application/json"
    req = urllib.request.Request(url, data=data, method=method, headers=headers)
    try:
        with urllib.request.urlopen(req, timeout=120) as resp:
            status, payload, hdrs = resp.status, resp.read(), resp.headers
    except urllib.error.HTTPError as exc:
        status, payload, hdrs = exc.code, exc.read(), exc.headers
    if raw or "json" not in hdrs.get("Content-Type", ""):
        return status, payload.decode("utf-8", "replace"), hdrs
    return status, json.loads(payload), hdrs


def png_b64(img) -> str:
    """A PIL image as base64 PNG."""
    import base64
    import io

    buf = io.BytesIO()
    img.save(buf, format="PNG")
    return base64.b64encode(buf.getvalue()).decode()


def start_serve(model_dir, *flags: str):
    """`rewarddance serve` in a subprocess on a free port with the tiny model `t` preloaded (CPU, fp32):
    (the process, its URL). The caller stops it."""
    import os
    import subprocess
    import sys

    proc = subprocess.Popen(
        [sys.executable, "-m", "rewarddance", "serve", "--model", f"t={model_dir}", "--port", "0"]
        + ["--device", "cpu", "--dtype", "fp32", "--preload", *flags],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env={**os.environ, "PYTHONUNBUFFERED": "1"},
    )
    line = proc.stdout.readline()
    if "serving on" not in line:
        proc.kill()
        raise AssertionError(f"rewarddance serve did not start: {proc.stderr.read()[-3000:]}")
    return proc, line.split("serving on ")[1].split()[0]


RAY_IMAGE_NAMES = [f"img{i:02d}.png" for i in range(6)]
RAY_BROKEN_NAME = "broken.png"


def write_ray_images(root: Path) -> Path:
    """Six small random images (RAY_IMAGE_NAMES) and one file that is not an image (RAY_BROKEN_NAME) in `root`."""
    for i, name in enumerate(RAY_IMAGE_NAMES):
        random_image(48 + 8 * i, 64, seed=i).save(root / name)
    (root / RAY_BROKEN_NAME).write_bytes(b"not an image")
    return root


def write_tiny_flow(folder: Path) -> Path:
    """A tiny flow model fitted to photo crops (150 steps, seed 0), saved as FOLDER/tiny.safetensors for configs."""
    from safetensors.torch import save_file

    from rewarddance.backend.generators.tiny_flow import train_tiny_flow

    gen = train_tiny_flow(steps=150, seed=0)
    path = folder / "tiny.safetensors"
    save_file({k: v.contiguous() for k, v in gen.net.state_dict().items()}, str(path))
    return path


class TowerCounter:
    """Counts the pixel rows (Qwen patches, InternVL tiles) the model's vision tower is run on."""

    def __init__(self, rm):
        inner = rm.vlm.model.model
        tower = getattr(inner, "visual", None) or inner.vision_tower
        self.rows = 0
        self.calls = 0
        self.handle = tower.register_forward_hook(self.hook, with_kwargs=True)

    def hook(self, module, args, kwargs, output) -> None:
        pixels = args[0] if args else kwargs["pixel_values"]
        self.rows += int(pixels.shape[0])
        self.calls += 1

    def __enter__(self) -> TowerCounter:
        return self

    def __exit__(self, *exc) -> None:
        self.handle.remove()
