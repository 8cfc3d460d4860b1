"""Memory of quantised judges: weight bytes, peak process memory and images/s while scoring 16 images, for fp32 /
bf16 / int8 / nf4, on random-weight Qwen2.5-VL checkpoints of the 95M quick shape ("small") and a ~0.5B shape
(Qwen2.5-0.5B's text shape, bench/judge_checkpoints.py); then how quantised scores rank against full precision
on the tiny trained judge of the RM-training benchmark (bench/rm_train_bench.py, trained here and kept): its
pairwise reading P(candidate beats reference) on held-out pairs in both orders, what it was trained for (the
bar), and its pointwise scores (nearly constant, since it was never trained pointwise; reported only).

Each (shape, mode) runs in its own process, so its peak resident memory (getrusage ru_maxrss) is its own. Weight
bytes are measured on the loaded model (parameters, buffers and bitsandbytes' scales) and set beside the
estimate of backend/memory_estimate.py. The last line is `nf4_weight_ratio=<nf4 / bf16 weight bytes>` of the
0.5B shape.

    python bench/memory_bench.py --quick              # CPU, under 10 minutes: both shapes, 4 modes, tiny judge
    python bench/memory_bench.py --device cuda --shapes small 0.5b 7b
    python bench/memory_bench.py --table              # README's judge memory table, from the estimator alone
"""

from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

MODES = {"fp32": ("fp32", "none"), "bf16": ("bf16", "none"), "int8": ("bf16", "int8"), "nf4": ("bf16", "nf4")}
# Published sizes of the judges in README's memory table (their config.json fields the estimator reads).
QWEN25_VISION = dict(depth=32, hidden_size=1280, intermediate_size=3420, hidden_act="silu", patch_size=14)
QWEN3_VISION = dict(depth=24, hidden_size=1024, intermediate_size=4096, patch_size=16, num_position_embeddings=2304)
INTERNVIT_300M = dict(num_hidden_layers=24, hidden_size=1024, intermediate_size=4096, patch_size=14, image_size=448)


def _text(h: int, layers: int, heads: int, kv: int, inter: int, vocab: int, **extra) -> dict:
    """A text_config of the fields the estimator reads."""
    return dict(
        hidden_size=h,
        num_hidden_layers=layers,
        num_attention_heads=heads,
        num_key_value_heads=kv,
        intermediate_size=inter,
        vocab_size=vocab,
        **extra,
    )


def _qwen25(text: dict, tied: bool) -> dict:
    return dict(
        model_type="qwen2_5_vl",
        tie_word_embeddings=tied,
        text_config=text,
        vision_config=dict(QWEN25_VISION, out_hidden_size=text["hidden_size"]),
    )


def _qwen3(text: dict, tied: bool, **vision) -> dict:
    text = dict(text, model_type="qwen3_vl_text", head_dim=128, attention_bias=False)
    vision = dict(QWEN3_VISION, **vision)
    vision.setdefault("deepstack_visual_indexes", [5, 11, 17])
    return dict(
        model_type="qwen3_vl",
        tie_word_embeddings=tied,
        text_config=text,
        vision_config=dict(vision, out_hidden_size=text["hidden_size"]),
    )


def _internvl(text: dict, tied: bool) -> dict:
    return dict(
        model_type="internvl",
        tie_word_embeddings=tied,
        downsample_ratio=0.5,
        text_config=text,
        vision_config=INTERNVIT_300M,
    )


JUDGES = {
    "Qwen/Qwen2.5-VL-3B-Instruct": _qwen25(_text(2048, 36, 16, 2, 11008, 151936), True),
    "Qwen/Qwen2.5-VL-7B-Instruct": _qwen25(_text(3584, 28, 28, 4, 18944, 152064), False),
    "Qwen/Qwen3-VL-2B-Instruct": _qwen3(_text(2048, 28, 16, 8, 6144, 151936), True),
    "Qwen/Qwen3-VL-4B-Instruct": _qwen3(_text(2560, 36, 32, 8, 9728, 151936), True),
    "Qwen/Qwen3-VL-8B-Instruct": _qwen3(
        _text(4096, 36, 32, 8, 12288, 151936),
        False,
        depth=27,
        hidden_size=1152,
        intermediate_size=4304,
        deepstack_visual_indexes=[8, 16, 24],
    ),
    "OpenGVLab/InternVL3-1B-hf": _internvl(_text(896, 24, 14, 2, 4864, 151674), False),
    "OpenGVLab/InternVL3-2B-hf": _internvl(_text(1536, 28, 12, 2, 8960, 151674), False),
    "OpenGVLab/InternVL3-8B-hf": _internvl(_text(3584, 28, 28, 4, 18944, 151674), False),
}
JUDGES["CodeGoat24/UnifiedReward-2.0-qwen-7b"] = JUDGES["Qwen/Qwen2.5-VL-7B-Instruct"]  # fine-tuned, same shape
TABLE_PIXELS = 28 * 28 * 1280  # one ~1 MP image (1280 visual tokens on Qwen2.5-VL)
TABLE_TOKENS = 4096  # one forward of a few such images

IMAGE_PIXELS = 112 * 112  # per image in the shape runs (16 visual tokens): weights dominate, as on a GPU judge


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--quick", action="store_true", help="the CPU configuration (the defaults)")
    p.add_argument("--shapes", nargs="+", default=["small", "0.5b"], help="judge_checkpoints shapes")
    p.add_argument("--modes", nargs="+", default=list(MODES), choices=list(MODES))
    p.add_argument("--images", type=int, default=16)
    p.add_argument("--device", default="cpu")
    p.add_argument("--rank-steps", type=int, default=300, help="training steps of the tiny judge (rm_train_bench)")
    p.add_argument("--rank-images", type=int, default=40, help="held-out images the tiny judge ranks")
    p.add_argument("--keep", default=None, help="keep checkpoints and the trained judge here (default: a temp dir)")
    p.add_argument("--table", action="store_true", help="print README's judge memory table (estimator only)")
    p.add_argument("--child", nargs=2, metavar=("MODEL", "MODE"), help=argparse.SUPPRESS)
    p.add_argument("--child-images", default=None, help=argparse.SUPPRESS)
    p.add_argument("--child-pairs", default=None, help=argparse.SUPPRESS)
    return p.parse_args(argv)


def bench_images(n: int, side: int = 112) -> list:
    """`n` different crops of scikit-image's sample photos."""
    from PIL import Image
    from skimage import data

    names = ["astronaut", "coffee", "chelsea", "rocket", "immunohistochemistry", "hubble_deep_field"]
    photos = [Image.fromarray(getattr(data, name)()).convert("RGB") for name in names]
    out = []
    for i in range(n):
        photo = photos[i % len(photos)]
        w, h = photo.size
        x, y = (i * 37) % max(1, w - side * 2), (i * 53) % max(1, h - side * 2)
        out.append(photo.crop((x, y, x + side * 2, y + side * 2)).resize((side, side)))
    return out


def child(args: argparse.Namespace) -> int:
    """One (model, mode) in this process: load, measure, score; print one JSON line."""
    import torch
    from transformers.utils import logging

    from rewarddance.backend.memory_estimate import estimate_memory, measured_weight_bytes
    from rewarddance.backend.reward_model import RewardModel

    logging.disable_progress_bar()
    model, mode = args.child
    dtype, quantization = MODES[mode]
    images = [str(p) for p in json.loads(args.child_images)] if args.child_images else bench_images(args.images)
    started = time.perf_counter()
    rm = RewardModel.from_pretrained(
        model, dtype=dtype, device=args.device, quantization=quantization, max_pixels=IMAGE_PIXELS
    )
    load_s = time.perf_counter() - started
    weights = measured_weight_bytes(rm.vlm.model)
    estimate = estimate_memory(model, dtype, quantization, IMAGE_PIXELS, 1536, args.device)
    rm.score(images[:1], "a photo")  # warm-up
    started = time.perf_counter()
    scores = rm.score(images, "a photo").scores
    seconds = time.perf_counter() - started
    if args.child_pairs:  # [prompt, reference, candidate]: P(candidate beats reference), the pairwise reading
        pairs = json.loads(args.child_pairs)
        scores = [rm.compare([cand], ref, prompt).scores[0] for prompt, ref, cand in pairs]
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024  # Linux: kilobytes
    gpu_peak = torch.cuda.max_memory_allocated() if torch.cuda.is_available() else None
    row = dict(mode=mode, weight_bytes=weights, estimate_bytes=estimate.weight_bytes, peak_rss_bytes=peak)
    row.update(gpu_peak_bytes=gpu_peak, images_per_s=len(images) / seconds, load_s=load_s, scores=scores)
    print("ROW " + json.dumps(row))
    return 0


def run_child(
    model: Path, mode: str, args: argparse.Namespace, images: list[str] | None = None, pairs: list | None = None
) -> dict:
    """Run one (model, mode) in a fresh process and return its row (`pairs`: pairwise scores instead)."""
    cmd = [sys.executable, __file__, "--child", str(model), mode, "--device", args.device, "--images", str(args.images)]
    if images is not None:
        cmd += ["--child-images", json.dumps(images)]
    if pairs is not None:
        cmd += ["--child-pairs", json.dumps(pairs)]
    done = subprocess.run(cmd, capture_output=True, text=True)
    rows = [line[4:] for line in done.stdout.splitlines() if line.startswith("ROW ")]
    if done.returncode or not rows:
        raise RuntimeError(f"{model} {mode} failed:\n{done.stderr[-3000:]}")
    return json.loads(rows[0])


def spearman(a: list[float], b: list[float]) -> float:
    """Spearman rank correlation."""
    from scipy.stats import spearmanr

    return float(spearmanr(a, b).statistic)


def shape_table(shape: str, model: Path, args: argparse.Namespace) -> dict[str, dict]:
    """Rows of every mode for one checkpoint shape, printed as they come."""
    rows = {}
    for mode in args.modes:
        row = rows[mode] = run_child(model, mode, args)
        print(
            f"{shape:>6} {mode:>5}: weights {row['weight_bytes'] / 1e6:8.1f} MB (estimate {row['estimate_bytes'] / 1e6:8.1f})"
            f"  peak RSS {row['peak_rss_bytes'] / 1e6:8.1f} MB  {row['images_per_s']:6.2f} images/s"
            + (f"  GPU peak {row['gpu_peak_bytes'] / 1e6:.1f} MB" if row["gpu_peak_bytes"] else ""),
            flush=True,
        )
    return rows


def trained_judge(root: Path, args: argparse.Namespace) -> tuple[Path, list[str], list[list[str]]]:
    """The RM-training benchmark's tiny judge, trained here (its own loop) and kept; held-out images and pairs
    ([prompt, reference, candidate], both orders of every held-out pair)."""
    import rm_train_bench

    from rewarddance.backend.training.data import load_pairs, split_pairs

    rm_train_bench.main(["--keep", str(root / "rm"), "--steps", str(args.rank_steps)])
    pairs = load_pairs(root / "rm" / "data" / "pairs.jsonl")
    _, held_out = split_pairs(pairs, 0.2, 0)
    images = [p for pair in held_out for p in (pair.chosen, pair.rejected)][: args.rank_images]
    both = [[p.prompt, a, b] for p in held_out for a, b in ((p.rejected, p.chosen), (p.chosen, p.rejected))]
    return root / "rm" / "run" / "model", images, both


def ranking_table(model: Path, images: list[str], pairs: list, args: argparse.Namespace) -> dict[str, float]:
    """Spearman and max |diff| of each mode's scores against fp32 on the trained judge: its pairwise reading
    (what it was trained for: the bar) and its pointwise scores (untrained, nearly constant: reported only)."""
    out = {}
    for kind, extra in (("pairwise", {"pairs": pairs}), ("pointwise", {})):
        base = run_child(model, "fp32", args, images, **extra)["scores"]
        for mode in [m for m in args.modes if m != "fp32"]:
            scores = run_child(model, mode, args, images, **extra)["scores"]
            rho = spearman(base, scores)
            if kind == "pairwise":
                out[mode] = rho
            diff = max(abs(a - b) for a, b in zip(base, scores))
            print(
                f"trained tiny judge, {kind:>9} {mode:>5} vs fp32: Spearman {rho:.4f}  max |diff| {diff:.4f}  "
                f"(fp32 score spread {max(base) - min(base):.4f}, {len(base)} scores)",
                flush=True,
            )
    return out


def judge_table() -> str:
    """README's markdown table: each judge's parameters and weights at bf16 / int8 / nf4, plus activations."""
    from rewarddance.backend.memory_estimate import config_counts, estimate_from_config

    lines = [
        "| judge | parameters | bf16 | int8 | nf4 | activations (bf16, 1 MP image, 4096 tokens) |",
        "|---|---|---|---|---|---|",
    ]
    for name, config in JUDGES.items():
        est = {q: estimate_from_config(config, "bf16", q, TABLE_PIXELS, TABLE_TOKENS) for q in ("none", "int8", "nf4")}
        sizes = " | ".join(f"{est[q].weight_bytes / 1e9:.1f} GB" for q in est)
        params = config_counts(config).total / 1e9
        lines.append(f"| {name} | {params:.2f}B | {sizes} | {est['none'].activation_bytes / 1e9:.1f} GB |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    if args.child:
        return child(args)
    if args.table:
        print(judge_table())
        return 0
    sys.path.insert(0, str(Path(__file__).parent))
    import torch
    from judge_checkpoints import write_checkpoint

    started = time.perf_counter()
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(args.keep or tmp)
        tables = {}
        for shape in args.shapes:
            model = root / shape
            if not (model / "config.json").is_file():
                write_checkpoint(shape, model, "cpu", torch.bfloat16)  # stored as the real checkpoints are
            tables[shape] = shape_table(shape, model, args)
        judge, images, pairs = trained_judge(root, args)
        spearmans = ranking_table(judge, images, pairs, args)
    print(f"total time: {time.perf_counter() - started:.0f} s on {args.device}")
    print(f"min_quantised_spearman={min(spearmans.values()):.4f}  (pairwise reading of the trained judge)")
    last = tables.get("0.5b") or tables[args.shapes[-1]]
    if "nf4" in last and "bf16" in last:
        print(f"nf4_weight_ratio={last['nf4']['weight_bytes'] / last['bf16']['weight_bytes']:.4f}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
