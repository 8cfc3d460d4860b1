"""Server throughput and latency at 1, 8 and 64 concurrent clients vs the engine's offline batched throughput.

Both sides score the same encoded PNG images against one prompt with the same weights:

- offline: one `RewardModel.score` call over every image (decoded from the same PNG bytes inside the
  timing, as `rewarddance score` reads files) — the best the engine does with the whole set up front.
- server: `rewarddance serve` in its own process; C clients each send their share of the requests one
  after another (one image per request, base64 JSON) with the async client; the dynamic batcher merges
  requests from different clients into token-bounded batches.

The run fails (exit 1) when a server score differs from the offline score of the same image by more than
1e-4 (fp32). The last line is `ratio_at_64=<server img/s at 64 clients / offline img/s>`.

    python bench/server_load.py --quick                     # CPU: the small random-weight Qwen2.5-VL, 224 px
    python bench/server_load.py --config 7b --device cuda --dtype bf16 --size 448 --requests 512
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import io
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from judge_checkpoints import write_checkpoint  # noqa: E402
from score_throughput import device_name, make_images, quiet_progress_bars  # noqa: E402

PROMPT = "a photo of an astronaut"
DTYPES = {"fp32": torch.float32, "bf16": torch.bfloat16, "fp16": torch.float16}


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    """Command-line options; --quick fills in the CPU configuration."""
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--quick", action="store_true", help="CPU run of a few minutes: small config, 224 px, 128 requests")
    p.add_argument("--config", default="small", help="tiny, small, 3b or 7b (random weights, real shapes)")
    p.add_argument("--device", default="cpu")
    p.add_argument("--dtype", default="fp32", choices=list(DTYPES))
    p.add_argument("--size", type=int, default=224, help="image side in pixels")
    p.add_argument("--requests", type=int, default=128, help="requests per concurrency level (one image each)")
    p.add_argument("--clients", default="1,8,64", help="concurrency levels")
    p.add_argument("--max-batch-tokens", type=int, default=None, help="server and offline token budget per forward")
    p.add_argument("--max-delay-ms", type=float, default=10.0)
    args = p.parse_args(argv)
    if args.quick:
        args.config, args.device, args.dtype, args.size, args.requests = "small", "cpu", "fp32", 224, 128
    args.levels = [int(c) for c in args.clients.split(",")]
    return args


def encode_png(img) -> bytes:
    buf = io.BytesIO()
    img.save(buf, format="PNG")
    return buf.getvalue()


def offline(ckpt: Path, args: argparse.Namespace, pngs: list[bytes]) -> tuple[list[float], float]:
    """Engine scores of every image in one call and the images per second (best of two runs)."""
    from rewarddance.backend import RewardModel
    from rewarddance.backend.media import load_image_bytes

    rm = RewardModel.from_pretrained(
        str(ckpt), dtype=args.dtype, device=args.device, max_batch_tokens=args.max_batch_tokens
    )
    rm.score([load_image_bytes(pngs[0])], PROMPT)  # warm-up
    best, scores = float("inf"), []
    for _ in range(2):
        start = time.perf_counter()
        scores = rm.score([load_image_bytes(b) for b in pngs], PROMPT).scores
        if args.device.startswith("cuda"):
            torch.cuda.synchronize()
        best = min(best, time.perf_counter() - start)
    del rm
    return scores, len(pngs) / best


def start_server(ckpt: Path, args: argparse.Namespace) -> tuple[subprocess.Popen, str]:
    """`rewarddance serve` in its own process on a free port; returns it and its URL."""
    cmd = [
        sys.executable,
        "-m",
        "rewarddance",
        "serve",
        "--model",
        f"bench={ckpt}",
        "--port",
        "0",
        "--preload",
        "--device",
        args.device,
        "--dtype",
        args.dtype,
        "--max-delay-ms",
        str(args.max_delay_ms),
        "--max-queue",
        "100000",
    ]
    if args.max_batch_tokens:
        cmd += ["--max-batch-tokens", str(args.max_batch_tokens)]
    proc = subprocess.Popen(
        cmd, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True, env={**os.environ, "PYTHONUNBUFFERED": "1"}
    )
    line = proc.stdout.readline()
    if "serving on" not in line:
        proc.kill()
        raise RuntimeError(f"the server did not start: {line!r}")
    return proc, line.split("serving on ")[1].split()[0]


async def load_level(url: str, clients: int, bodies: list[bytes]) -> tuple[float, list[float], list[float]]:
    """Send `bodies` from `clients` concurrent clients; (seconds, per-request latencies, scores in body order)."""
    from rewarddance.backend.client import AsyncRewardClient

    scores: list[float] = [0.0] * len(bodies)
    latencies: list[float] = []

    async def client(k: int, c: AsyncRewardClient) -> None:
        for i in range(k, len(bodies), clients):
            start = time.perf_counter()
            scores[i] = (await c.request("POST", "/v1/score", bodies[i]))["scores"][0]
            latencies.append(time.perf_counter() - start)

    async with AsyncRewardClient(url, connections=clients, retries=0) as c:
        await c.request("POST", "/v1/score", bodies[0])  # connection warm-up
        start = time.perf_counter()
        await asyncio.gather(*(client(k, c) for k in range(clients)))
        return time.perf_counter() - start, latencies, scores


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    quiet_progress_bars()
    dtype = DTYPES[args.dtype]
    with tempfile.TemporaryDirectory() as tmp:
        ckpt = write_checkpoint(args.config, Path(tmp) / args.config, args.device, dtype)
        pngs = [encode_png(img) for img in make_images(args.requests, args.size)]
        bodies = [f'{{"prompt": "{PROMPT}", "images": ["{base64.b64encode(b).decode()}"]}}'.encode() for b in pngs]
        print(
            f"device: {device_name(args.device)}; config {args.config}, {args.dtype}, {args.size}px, "
            f"{args.requests} requests of one image per level"
        )
        reference, offline_rate = offline(ckpt, args, pngs)
        print(f"offline engine: {offline_rate:.2f} img/s")
        proc, url = start_server(ckpt, args)
        rows, ok = [], True
        try:
            for clients in args.levels:
                seconds, latencies, scores = asyncio.run(load_level(url, clients, bodies))
                diff = max(abs(a - b) for a, b in zip(scores, reference))
                ok &= diff <= 1e-4 or args.dtype != "fp32"
                rate = len(bodies) / seconds
                rows.append((clients, rate, np.percentile(latencies, 50), np.percentile(latencies, 99), diff))
        finally:
            proc.terminate()
            proc.wait(60)
    print(f"{'clients':>8} {'img/s':>8} {'p50 ms':>9} {'p99 ms':>9} {'vs offline':>11} {'max |diff|':>11}")
    for clients, rate, p50, p99, diff in rows:
        print(
            f"{clients:>8} {rate:>8.2f} {p50 * 1000:>9.1f} {p99 * 1000:>9.1f} {rate / offline_rate:>11.2f} {diff:>11.2g}"
        )
    if not ok:
        print("FAIL: server scores differ from offline scores by more than 1e-4", file=sys.stderr)
        return 1
    at_64 = next((rate for clients, rate, *_ in rows if clients == 64), rows[-1][1])
    print(f"ratio_at_64={at_64 / offline_rate:.2f}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
