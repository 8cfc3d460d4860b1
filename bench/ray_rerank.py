"""`rewarddance rerank` locally vs `rewarddance rerank --ray` with a pool of actors, on the same image files.

Both sides run the real command end to end on one folder of PNG files (decoding, model loading, scoring,
writing results): local rerank in this process (torch uses every core), then --ray on a local Ray instance
started beforehand (a cluster is up before a job is sent to it), with ACTORS actors of one CPU
each; the Ray time includes starting the actors and loading one model in each. On 2 CPU cores this measures
Ray's overhead, not scaling. The run fails (exit 1) when a Ray score differs from the local score of the same
file by more than 1e-5 (fp32). The last line is `ray_over_local=<ray img/s / local img/s>`.

    python bench/ray_rerank.py --quick                         # CPU: the small random-weight Qwen2.5-VL, 224 px
    python bench/ray_rerank.py --config 3b --device cuda --dtype bf16 --actors 4 --gpus-per-actor 0.25
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from judge_checkpoints import write_checkpoint  # noqa: E402
from score_throughput import device_name, make_images, quiet_progress_bars  # noqa: E402

PROMPT = "a photo of an astronaut"
DTYPES = {"fp32": torch.float32, "bf16": torch.bfloat16, "fp16": torch.float16}


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    """Command-line options; --quick fills in the CPU configuration."""
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--quick", action="store_true", help="CPU run of a few minutes: small config, 224 px, 256 images")
    p.add_argument("--config", default="small", help="tiny, small, 3b or 7b (random weights, real shapes)")
    p.add_argument("--device", default="cpu")
    p.add_argument("--dtype", default="fp32", choices=list(DTYPES))
    p.add_argument("--size", type=int, default=224, help="image side in pixels")
    p.add_argument("--images", type=int, default=256)
    p.add_argument("--actors", type=int, default=2)
    p.add_argument("--gpus-per-actor", type=float, default=0.0)
    p.add_argument("--batch-size", type=int, default=16, help="rows per actor call (local rerank scores 16 at a time)")
    args = p.parse_args(argv)
    if args.quick:
        args.config, args.device, args.dtype, args.size, args.images = "small", "cpu", "fp32", 224, 256
    return args


def timed_rerank(argv: list[str]) -> float:
    """Seconds one `rewarddance` command takes (it must succeed)."""
    from rewarddance.backend.cli import main

    start = time.perf_counter()
    code = main(argv)
    seconds = time.perf_counter() - start
    if code != 0:
        raise SystemExit(f"`rewarddance {' '.join(argv)}` failed with exit status {code}")
    return seconds


def local_scores(path: Path) -> dict[str, float]:
    """Local rerank's --out rows as {file name: score}."""
    rows = [json.loads(line) for line in path.read_text().splitlines()]
    return {Path(r["path"]).name: r["score"] for r in rows}


def ray_scores(out: Path) -> dict[str, float]:
    """The Ray run's shards as {file name: score}."""
    from rewarddance.backend.integrations.ray_shards import read_results

    return {Path(r["path"]).name: r["score"] for r in read_results(out)}


def main(argv: list[str] | None = None) -> int:
    """Write the images and the judge, time both reranks, check the scores agree, print the ratio."""
    args = parse_args(argv)
    quiet_progress_bars()
    os.environ.setdefault("RAY_DEDUP_LOGS", "0")
    import ray

    cores = os.cpu_count() or 1
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        folder = root / "images"
        folder.mkdir()
        for i, image in enumerate(make_images(args.images, args.size)):
            image.save(folder / f"{i:04d}.png")
        ckpt = write_checkpoint(args.config, root / "judge", args.device, DTYPES[args.dtype])
        common = ["--model", str(ckpt), "--dtype", args.dtype, "--device", args.device, "--prompt", PROMPT, "--quiet"]
        common += ["--top-k", "1"]  # print only the best file (both runs)

        local_s = timed_rerank(["rerank", str(folder), *common, "--out", str(root / "local.jsonl")])
        ray.init(num_cpus=cores, include_dashboard=False, log_to_driver=False, configure_logging=False)
        ray.data.DataContext.get_current().enable_progress_bars = False
        ray_flags = ["--ray", "--actors", str(args.actors), "--batch-size", str(args.batch_size)]
        ray_flags += ["--gpus-per-actor", str(args.gpus_per_actor), "--out", str(root / "ray")]
        ray_s = timed_rerank(["rerank", str(folder), *common, *ray_flags])
        ray.shutdown()

        local, remote = local_scores(root / "local.jsonl"), ray_scores(root / "ray")
        worst = max(abs(local[k] - remote[k]) for k in local) if local.keys() == remote.keys() else float("inf")
    n = args.images
    print(f"device={device_name(args.device)} config={args.config} dtype={args.dtype} size={args.size} images={n}")
    print(f"local rerank: {local_s:.1f} s  {n / local_s:.2f} img/s")
    print(f"ray rerank ({args.actors} actors, 1 CPU each): {ray_s:.1f} s  {n / ray_s:.2f} img/s")
    print(f"max |score diff| = {worst:.2e}")
    if worst > 1e-5 and args.dtype == "fp32":
        print("FAIL: Ray scores differ from local rerank's", file=sys.stderr)
        return 1
    print(f"ray_over_local={local_s / ray_s:.3f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
