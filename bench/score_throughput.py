"""Throughput of pointwise VQAScore-style scoring: the usual one-image-at-a-time way vs `RewardModel.score`.

Both paths score the same N PIL images (crops of scikit-image's sample photos) against one prompt with the
same weights and the same question, and read the same number: P("Yes") under a softmax over the full
vocabulary at the first answer position.

- baseline: what t2v_metrics' Qwen2-VL VQAScore model does today. One image at a time: the checkpoint's
  chat template, its transformers image processor (AutoImageProcessor), `<|image_pad|>` expanded to the image's token
  count, then `model.generate(max_new_tokens=1, output_scores=True, return_dict_in_generate=True,
  do_sample=False)`, a softmax over `scores[0]` and the probability of the first token of "Yes".
- engine: one `RewardModel.score(images, prompt)` call (tensor preprocessing, token-budget batching,
  shared-prefix reuse, `logits_to_keep=1`).

transformers' generate() already passes `logits_to_keep=1` to models that accept it, so the baseline does
not pay for full-vocabulary logits at every prompt position; what differs is batching, preprocessing and
per-call overhead. On a few CPU cores both paths are compute-bound on the same FLOPs (the engine is
1.1-1.4x faster there, see bench/RESULTS.md); batching pays off on GPUs, where one ~300-token sequence
leaves the device mostly idle.

The run fails (exit 1) when the two disagree: max |baseline - engine| above 2e-3 in fp32 (looser in
bf16/fp16, where batched and unbatched kernels round differently). The last line is `speedup=<x>`.

    python bench/score_throughput.py --quick                  # CPU, a small random-weight Qwen2.5-VL
    python bench/score_throughput.py --quick --mode pairwise  # candidates vs one reference image
    python bench/score_throughput.py --config 7b --device cuda  # random weights, real 7B shapes
    python bench/score_throughput.py --model /models/Qwen2.5-VL-7B-Instruct
"""

from __future__ import annotations

import argparse
import math
import shutil
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

import numpy as np
import torch
from judge_checkpoints import write_checkpoint
from PIL import Image as PILImage

QUESTION = 'Does this image show "{prompt}"?'
PROMPT = "a photo of an astronaut"
ANSWER = "Yes"
FP32_TOLERANCE = 2e-3
FP32_LOG_TOLERANCE = 1e-2  # |log P_baseline - log P_engine|: meaningful even when random weights give tiny P
LOW_PRECISION_TOLERANCE = 3e-2
QWEN_FAMILIES = ("qwen2_vl", "qwen2_5_vl", "qwen3_vl")
T = TypeVar("T")


def make_images(n: int, size: int, seed: int = 0) -> list[PILImage.Image]:
    """N distinct size x size RGB PIL images: random crops (and flips) of the sample photos."""
    from rewarddance.backend.sample_photos import sample_photos

    rng = np.random.default_rng(seed)
    photos = sample_photos()
    images = []
    for i in range(n):
        photo = photos[i % len(photos)]
        h, w = photo.shape[:2]
        side = int(min(h, w) * rng.uniform(0.6, 1.0))
        top, left = int(rng.integers(0, h - side + 1)), int(rng.integers(0, w - side + 1))
        crop = PILImage.fromarray(photo[top : top + side, left : left + side]).convert("RGB")
        if rng.random() < 0.5:
            crop = crop.transpose(PILImage.FLIP_LEFT_RIGHT)
        images.append(crop.resize((size, size), PILImage.BICUBIC))
    return images


# --- baseline: one image at a time through generate() ----------------------------------------------------
@dataclass
class Baseline:
    """The t2v_metrics-style scorer: transformers image processor + chat template + generate(), per image."""

    model: Any
    tokenizer: Any
    chat_template: str
    processor: Any
    yes_id: int
    pad_token: str = "<|image_pad|>"

    @classmethod
    def from_vlm(cls, vlm: Any) -> Baseline:
        """Reuse the engine's loaded model, tokenizer and chat template; build the family's image processor."""
        if vlm.family.name not in QWEN_FAMILIES:
            raise SystemExit(
                f"the baseline is the Qwen-VL processor path; {vlm.family.name} checkpoints are not supported"
            )
        processor = image_processor(Path(vlm.path))
        yes_id = vlm.tokenizer.encode(ANSWER, add_special_tokens=False)[0]
        return cls(vlm.model, vlm.tokenizer, vlm.chat_template, processor, int(yes_id))

    def inputs(self, images: list[PILImage.Image], messages: list[dict], continuation: str = "") -> dict[str, Any]:
        """Model inputs of one chat (images in order of appearance) and any text after the assistant turn's start,
        as the Qwen2.5-VL processor builds them."""
        text = self.tokenizer.apply_chat_template(
            messages, chat_template=self.chat_template, tokenize=False, add_generation_prompt=True
        )
        text += continuation
        vision = self.processor(images=images, return_tensors="pt")
        merge = int(getattr(self.processor, "merge_size", 2))
        parts = text.split(self.pad_token)
        counts = [int(g.prod()) // (merge * merge) for g in vision["image_grid_thw"]]
        text = parts[0] + "".join(self.pad_token * n + rest for n, rest in zip(counts, parts[1:]))
        encoded = self.tokenizer(text, return_tensors="pt")
        device, dtype = self.model.device, self.model.dtype
        inputs = {k: encoded[k].to(device) for k in ("input_ids", "attention_mask")}
        inputs["pixel_values"] = vision["pixel_values"].to(device, dtype)
        inputs["image_grid_thw"] = vision["image_grid_thw"].to(device)
        if _accepts(self.model.forward, "mm_token_type_ids"):  # transformers 5.x
            pad_id = self.tokenizer.convert_tokens_to_ids(self.pad_token)
            inputs["mm_token_type_ids"] = (inputs["input_ids"] == pad_id).int()
        return inputs

    def pointwise_messages(self, prompt: str) -> list[dict]:
        """The VQAScore chat: the image, then the question."""
        return [
            {"role": "user", "content": [{"type": "image"}, {"type": "text", "text": QUESTION.format(prompt=prompt)}]}
        ]

    def score_one(self, images: list[PILImage.Image], messages: list[dict]) -> float:
        """P("Yes") for one chat: greedy generate of one token, softmax over its scores."""
        return float(self.next_token_probs(images, messages)[self.yes_id])

    def next_token_probs(
        self, images: list[PILImage.Image], messages: list[dict], continuation: str = ""
    ) -> torch.Tensor:
        """The first generated token's probabilities [V] after one chat (and `continuation`)."""
        inputs = self.inputs(images, messages, continuation)
        # repetition_penalty=1.0: real Qwen checkpoints ship 1.05, which would bend `scores` away from the logits.
        with torch.inference_mode():
            out = self.model.generate(
                **inputs,
                max_new_tokens=1,
                output_scores=True,
                return_dict_in_generate=True,
                do_sample=False,
                repetition_penalty=1.0,
                pad_token_id=self.tokenizer.pad_token_id,
            )
        return torch.softmax(out.scores[0][0].float(), dim=-1)

    def score(self, images: list[PILImage.Image], prompt: str) -> list[float]:
        """Pointwise scores of all images, one generate() call each."""
        return [self.score_one([image], self.pointwise_messages(prompt)) for image in images]

    def compare(
        self,
        candidates: list[PILImage.Image],
        reference: PILImage.Image,
        prompt: str,
        messages_for: Callable[[PILImage.Image, PILImage.Image], list[dict]],
    ) -> list[float]:
        """Pairwise scores (reference = image 1), one generate() call per candidate."""
        return [self.score_one([reference, c], messages_for(reference, c)) for c in candidates]


def _accepts(fn: Callable, name: str) -> bool:
    """True when `fn`'s signature names `name`."""
    import inspect

    return name in inspect.signature(fn).parameters


def image_processor(path: Path) -> Any:
    """The image processor users get from the checkpoint (AutoImageProcessor: the PIL class without torchvision)."""
    from transformers import AutoImageProcessor

    return AutoImageProcessor.from_pretrained(path)


# --- timing ---------------------------------------------------------------------------------------------
def synchronize(device: str) -> None:
    """Wait for queued GPU work so wall-clock timings are complete."""
    if device.startswith("cuda"):
        torch.cuda.synchronize()


def timed(fn: Callable[[], T], device: str) -> tuple[T, float, float]:
    """Run `fn` once; return its result (scores), the elapsed seconds and the share of the threads' time it got."""
    synchronize(device)
    start, cpu = time.perf_counter(), time.process_time()
    scores = fn()
    synchronize(device)
    wall = time.perf_counter() - start
    return scores, wall, (time.process_time() - cpu) / (wall * torch.get_num_threads())


def check_agreement(baseline: list[float], engine: list[float], dtype: torch.dtype) -> bool:
    """Print how far the engine's scores are from the baseline's; False when beyond tolerance."""
    diff = max(abs(a - b) for a, b in zip(baseline, engine))
    log_diff = max(abs(math.log(max(a, 1e-30)) - math.log(max(b, 1e-30))) for a, b in zip(baseline, engine))
    fp32 = dtype == torch.float32
    tolerance = FP32_TOLERANCE if fp32 else LOW_PRECISION_TOLERANCE
    print(f"scores: min {min(engine):.4g}  max {max(engine):.4g}  mean {sum(engine) / len(engine):.4g}")
    print(
        f"max |baseline - engine| = {diff:.3g} (tolerance {tolerance:g}); max |log ratio| = {log_diff:.3g}"
        + (f" (tolerance {FP32_LOG_TOLERANCE:g})" if fp32 else "")
    )
    ok = diff <= tolerance and (not fp32 or log_diff <= FP32_LOG_TOLERANCE)
    if not ok:
        print("FAIL: baseline and engine scores disagree", file=sys.stderr)
    return ok


# --- command line ---------------------------------------------------------------------------------------
def add_model_options(parser: argparse.ArgumentParser) -> None:
    """The options every scoring benchmark shares: the judge, its device and dtype, image size, prompt, budget."""
    parser.add_argument("--quick", action="store_true", help="CPU run of a few minutes: --config small, fp32")
    parser.add_argument("--model", help="an existing Qwen2.5-VL / Qwen2-VL checkpoint directory")
    parser.add_argument(
        "--config",
        choices=["tiny", "small", "0.5b", "3b", "7b"],
        default=None,
        help="build a random-weight Qwen2.5-VL of this size in a temp dir (default: small)",
    )
    parser.add_argument("--device", default=None, help="cpu, cuda, cuda:1 (default: cuda if available)")
    parser.add_argument(
        "--dtype", choices=["fp32", "bf16", "fp16"], default=None, help="default: fp32 on CPU, bf16 on GPU"
    )
    parser.add_argument("--size", type=int, default=448, help="square image side in pixels")
    parser.add_argument("--max-batch-tokens", type=int, default=None, help="engine token budget per forward")
    parser.add_argument("--prompt", default=PROMPT)


def resolve_model_options(parser: argparse.ArgumentParser, args: argparse.Namespace) -> None:
    """Fill in the defaults of `add_model_options` (--quick: small config on the CPU); refuse conflicting ones."""
    if args.model and args.config:
        parser.error("pass either --model or --config, not both")
    if args.quick:
        args.device = args.device or "cpu"
    if not args.model:
        args.config = args.config or "small"
    args.device = args.device or ("cuda" if torch.cuda.is_available() else "cpu")
    args.dtype = args.dtype or ("bf16" if args.device.startswith("cuda") else "fp32")
    if args.size < 28:
        parser.error(f"--size must be >= 28, got {args.size}")


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    """Command-line options; --quick fills in the small CPU configuration."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    add_model_options(parser)
    parser.add_argument("--n", type=int, default=64, help="number of candidate images")
    parser.add_argument(
        "--mode",
        choices=["pointwise", "pairwise"],
        default="pointwise",
        help="pairwise: every candidate against one reference image (the shared prefix is reused)",
    )
    args = parser.parse_args(argv)
    resolve_model_options(parser, args)
    if args.n < 1:
        parser.error("--n must be >= 1")
    return args


def device_name(device: str) -> str:
    """GPU name, or "cpu (<threads> threads)"."""
    if device.startswith("cuda"):
        return torch.cuda.get_device_name(torch.device(device))
    return f"cpu ({torch.get_num_threads()} threads)"


def quiet_progress_bars() -> None:
    """Keep transformers' weight loading/saving progress bars out of the report."""
    from transformers.utils import logging

    logging.disable_progress_bar()


def transformers_version() -> str:
    """The installed transformers version."""
    import transformers

    return transformers.__version__


def describe(model: Any) -> str:
    """One line with the loaded model's main shapes and parameter count."""
    cfg = model.config
    text, vision = cfg.text_config, cfg.vision_config
    params = sum(p.numel() for p in model.parameters()) / 1e6
    return (
        f"text hidden {text.hidden_size} x {text.num_hidden_layers} layers, vocab {text.vocab_size}; "
        f"vision hidden {vision.hidden_size} x {vision.depth} layers; {params:.0f}M params"
    )


def main(argv: list[str] | None = None) -> int:
    """Build or load the model, check baseline and engine agree, and report images/s and the speedup."""
    from rewarddance.backend.devices import DTYPES
    from rewarddance.backend.reward_model import RewardModel

    args = parse_args(argv)
    dtype = DTYPES[args.dtype]
    quiet_progress_bars()
    torch.set_grad_enabled(False)
    workdir = Path(tempfile.mkdtemp(prefix="score_throughput_"))
    try:
        print(f"device: {device_name(args.device)}  (torch {torch.__version__}, transformers {transformers_version()})")
        print(f"config: {args.model or args.config}  N={args.n}  size={args.size}x{args.size}  dtype={args.dtype}")
        model_dir = args.model or str(write_checkpoint(args.config, workdir / args.config, args.device, dtype))
        question = QUESTION if args.mode == "pointwise" else None  # pairwise: the project's pairwise wording
        rm = RewardModel.from_pretrained(
            model_dir,
            dtype=args.dtype,
            device=args.device,
            question=question,
            normalize="vocab",
            answer=ANSWER,
            max_batch_tokens=args.max_batch_tokens,
        )
        print(f"model: {describe(rm.vlm.model)}  mode: {args.mode}")
        baseline = Baseline.from_vlm(rm.vlm)
        images = make_images(args.n + 1, args.size)
        reference, images = images[-1], images[:-1]

        def pair_messages(ref: PILImage.Image, cand: PILImage.Image) -> list[dict]:
            from rewarddance.backend.media import Image
            from rewarddance.backend.scoring.prompts import pairwise_query

            return pairwise_query(Image(pil=ref), Image(pil=cand), args.prompt, rm.config).messages

        if args.mode == "pairwise":

            def engine(batch: list[PILImage.Image]) -> list[float]:
                return rm.compare(batch, reference, args.prompt).scores

            def base(batch: list[PILImage.Image]) -> list[float]:
                return baseline.compare(batch, reference, args.prompt, pair_messages)
        else:

            def engine(batch: list[PILImage.Image]) -> list[float]:
                return rm.score(batch, args.prompt).scores

            def base(batch: list[PILImage.Image]) -> list[float]:
                return baseline.score(batch, args.prompt)

        base(images[:2])  # warm-up
        engine(images[:2])
        rm.scorer.stats.clear()
        base_scores, base_s, base_use = timed(lambda: base(images), args.device)
        engine_scores, engine_s, engine_use = timed(lambda: engine(images), args.device)

        agree = check_agreement(base_scores, engine_scores, dtype)
        base_rate, engine_rate = args.n / base_s, args.n / engine_s
        on_cpu = not args.device.startswith("cuda")
        base_note, engine_note = (f", CPU use {base_use:.0%}", f", CPU use {engine_use:.0%}") if on_cpu else ("", "")
        print(f"baseline: {base_rate:.2f} images/s  ({base_s:.2f} s{base_note})")
        print(
            f"engine: {engine_rate:.2f} images/s  ({engine_s:.2f} s{engine_note}; "
            f"forwards={rm.scorer.stats['forwards']}, prefix forwards={rm.scorer.stats['prefix_forwards']})"
        )
        if on_cpu and min(base_use, engine_use) < 0.75:
            print(
                f"warning: this process got {min(base_use, engine_use):.0%} of {torch.get_num_threads()} threads' "
                "time while timed; other processes share the CPU and the timings are noisy"
            )
        print(f"speedup={engine_rate / base_rate:.2f}")
        return 0 if agree else 1
    finally:
        shutil.rmtree(workdir, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
