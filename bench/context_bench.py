"""Context scaling: `RewardModel` vs the naive per-query loop when a judgement reads more than one image or writes
reasoning first: pairwise, few-shot, tournament and chain of thought.

Both paths use the same weights, the same images (crops of scikit-image's sample photos, a separate set per case)
and the same prompt text: the naive loop builds each query's messages with the project's prompt builders
(backend/scoring/prompts.py), renders them with the checkpoint's chat template, passes all of the query's images
(examples, reference, candidate) through the checkpoint's transformers image processor and calls `generate`, one
query at a time. This is bench/score_throughput.py's t2v_metrics-style baseline, extended the obvious way:

- pointwise (N=64): one image per query, `generate(max_new_tokens=1, output_scores=True)`, P("Yes").
- pairwise (N=64): reference + candidate per query, the project's pairwise question.
- few_shot (N=32): 4 example images with their verdicts (yes, no, yes, ...), then the candidate.
- tournament (8 candidates, 56 ordered pairs): every candidate against every other one as the reference.
- reasoning_first (N=16, 32 reasoning tokens): greedy `generate` of the reasoning, then the answer read after
  "<reasoning>\\nFinal answer:" as the engine reads it (P of "Yes" or " Yes").
- answer_first (N=16, 32 tokens of reasons): one greedy `generate` per query; the logits of its first step give
  the score, its text the reasons.

The engine makes one call per case (`score`, `compare`, `score(few_shot=...)`, `tournament`, `score(cot=...)`).
Throughput is judgements per second ("img/s": candidates scored; for the tournament, ordered pairs). Each case
prints both rates, the ratio engine / naive, the max |score difference| and max |log ratio| (random weights give
tiny probabilities), for the generating cases whether the greedy texts are identical, and the engine's achieved
GFLOP/s: the FLOPs of one more engine run of the case, counted with torch.utils.flop_counter.FlopCounterMode,
divided by the timed run's seconds, also as a fraction of this machine's GEMM peak (a timed loop of large
`torch.mm` in the run's dtype, measured at the start of the run), and the share of those FLOPs in the vision tower. The last line is
`min_speedup=<smallest ratio among the context cases>` (every case but pointwise). The run fails (exit 1) when
scores disagree (fp32: |diff| above 1e-4 or |log ratio| above 1e-2) or, in fp32, greedy texts differ.

The engine gets the PIL images as a user passes them. Each timed engine run comes before the FLOP-counting one, and
every case has its own images, so no engine call finds its reference or examples already computed by an earlier one.

--quick runs the sizes above (the 95M "small" config, 448 px, fp32, CPU), sized to finish within 10 minutes on 2
quiet CPU cores (bench/RESULTS.md records measured runs). --n caps every case's size for shorter runs (the
tournament keeps at least 2 candidates).

    python bench/context_bench.py --quick
    python bench/context_bench.py --quick --cases pairwise,few_shot --n 8
    python bench/context_bench.py --config 3b --device cuda --dtype bf16
"""

from __future__ import annotations

import argparse
import math
import shutil
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import torch
from judge_checkpoints import write_checkpoint
from PIL import Image as PILImage
from score_throughput import (
    FP32_LOG_TOLERANCE,
    LOW_PRECISION_TOLERANCE,
    Baseline,
    add_model_options,
    describe,
    device_name,
    make_images,
    quiet_progress_bars,
    resolve_model_options,
    synchronize,
    timed,
    transformers_version,
)
from torch.utils.flop_counter import FlopCounterMode, sdpa_flop_count

CASES = ("pointwise", "pairwise", "few_shot", "tournament", "reasoning_first", "answer_first")
SIZES = {"pointwise": 64, "pairwise": 64, "few_shot": 32, "tournament": 8, "reasoning_first": 16, "answer_first": 16}
GENERATING = ("reasoning_first", "answer_first")
FP32_TOLERANCE = 1e-4


# --- the naive loop -------------------------------------------------------------------------------------
def answer_ids(tokenizer: Any, with_space: bool) -> list[int]:
    """First token ids of "Yes" (and " Yes", as the engine reads the verdict after reasoning)."""
    words = ["Yes", " Yes"] if with_space else ["Yes"]
    return list(dict.fromkeys(tokenizer.encode(w, add_special_tokens=False)[0] for w in words))


@dataclass
class NaiveLoop:
    """bench/score_throughput.py's baseline for any query: all its images through the processor, `generate`."""

    base: Baseline

    def score(self, query: Any, yes_ids: list[int]) -> float:
        """P(yes) of one query (after its continuation): greedy generate of one token."""
        probs = self.base.next_token_probs(pil_images(query), query.messages, query.continuation)
        return float(probs[yes_ids].sum())

    def generate(self, query: Any, max_new_tokens: int, logits: bool = False) -> tuple[str, torch.Tensor | None]:
        """Greedy continuation of one query (decoded without special tokens) and, when asked, its first step's
        logits [V] (before any logits processor, as the engine reads them)."""
        inputs = self.base.inputs(pil_images(query), query.messages, query.continuation)
        with torch.inference_mode():
            out = self.base.model.generate(
                **inputs,
                max_new_tokens=max_new_tokens,
                do_sample=False,
                output_logits=logits,
                return_dict_in_generate=True,
                pad_token_id=self.base.tokenizer.pad_token_id,
            )
        text = self.base.tokenizer.decode(out.sequences[0, inputs["input_ids"].shape[1] :], skip_special_tokens=True)
        return text, out.logits[0][0].float() if logits else None

    def reasoning_first(self, query: Any, tokens: int, yes_ids: list[int]) -> tuple[float, str]:
        """Generate the reasoning, then read the verdict after it and the verdict marker."""
        from rewarddance.backend.reward_model import reasoning_before_verdict
        from rewarddance.backend.scoring.prompts import VERDICT_MARKER

        text, _ = self.generate(query, tokens)
        query.continuation = reasoning_before_verdict(text) + "\n" + VERDICT_MARKER
        return self.score(query, yes_ids), text

    def answer_first(self, query: Any, tokens: int, yes_ids: list[int]) -> tuple[float, str]:
        """One generate: the score from its first step, the reasons from its text."""
        text, logits = self.generate(query, tokens, logits=True)
        return float(torch.softmax(logits, dim=-1)[yes_ids].sum()), text.strip()


def pil_images(query: Any) -> list[PILImage.Image]:
    """The PIL images of a query's visuals, in order of appearance."""
    return [v.pil for v in query.visuals]


# --- the cases ------------------------------------------------------------------------------------------
@dataclass
class Outcome:
    """Scores of one path over a case, and the generated texts of the generating cases."""

    scores: list[float]
    texts: list[str] | None = None


@dataclass
class Case:
    """One workload: how many judgements it makes and how the engine and the naive loop run it."""

    name: str
    judgements: int
    engine: Callable[[], Outcome]
    naive: Callable[[], Outcome]


@dataclass
class Bench:
    """What every case is built from: the engine, the naive loop, the prompt and the case sizes."""

    rm: Any
    naive: NaiveLoop
    prompt: str
    size: int
    examples: int
    reason_tokens: int


def wrap(images: list[PILImage.Image]) -> list[Any]:
    """The project's image type around PIL images (the prompt builders take visuals)."""
    from rewarddance.backend.media import Image

    return [Image(pil=im) for im in images]


def pointwise_case(bench: Bench, n: int, seed: int) -> Case:
    """One image per query."""
    from rewarddance.backend.scoring.prompts import pointwise_query

    images = make_images(n, bench.size, seed)
    yes = answer_ids(bench.rm.vlm.tokenizer, False)

    def naive() -> Outcome:
        return Outcome(
            [bench.naive.score(pointwise_query(v, bench.prompt, bench.rm.config), yes) for v in wrap(images)]
        )

    return Case("pointwise", n, lambda: Outcome(bench.rm.score(images, bench.prompt).scores), naive)


def pairwise_case(bench: Bench, n: int, seed: int) -> Case:
    """Every candidate against one reference image (image 1)."""
    from rewarddance.backend.scoring.prompts import pairwise_query

    *images, reference = make_images(n + 1, bench.size, seed)
    yes = answer_ids(bench.rm.vlm.tokenizer, False)

    def naive() -> Outcome:
        ref = wrap([reference])[0]
        queries = [pairwise_query(ref, v, bench.prompt, bench.rm.config) for v in wrap(images)]
        return Outcome([bench.naive.score(q, yes) for q in queries])

    return Case("pairwise", n, lambda: Outcome(bench.rm.compare(images, reference, bench.prompt).scores), naive)


def few_shot_case(bench: Bench, n: int, seed: int) -> Case:
    """`examples` example images with alternating verdicts before every candidate."""
    from rewarddance.backend.scoring.prompts import FewShotExample, pointwise_query

    pictures = make_images(n + bench.examples, bench.size, seed)
    images, shown = pictures[:n], pictures[n:]
    examples = [FewShotExample(im, verdict=i % 2 == 0) for i, im in enumerate(shown)]
    yes = answer_ids(bench.rm.vlm.tokenizer, False)

    def engine() -> Outcome:
        return Outcome(bench.rm.score(images, bench.prompt, few_shot=examples).scores)

    def naive() -> Outcome:
        queries = [pointwise_query(v, bench.prompt, bench.rm.config, examples) for v in wrap(images)]
        return Outcome([bench.naive.score(q, yes) for q in queries])

    return Case("few_shot", n, engine, naive)


def tournament_case(bench: Bench, n: int, seed: int) -> Case:
    """Round robin over n candidates: n (n - 1) ordered pairs (reference i, candidate j)."""
    from rewarddance.backend.reward_model import tournament_queries

    images = make_images(n, bench.size, seed)
    pairs = [(i, j) for i in range(n) for j in range(n) if i != j]
    yes = answer_ids(bench.rm.vlm.tokenizer, False)

    def engine() -> Outcome:
        matrix = bench.rm.tournament(images, bench.prompt).matrix
        return Outcome([matrix[i][j] for i, j in pairs])

    def naive() -> Outcome:
        queries, _ = tournament_queries(wrap(images), bench.prompt, bench.rm.config)  # the same (i, j) order
        return Outcome([bench.naive.score(q, yes) for q in queries])

    return Case("tournament", len(pairs), engine, naive)


def cot_case(bench: Bench, n: int, seed: int, mode: str) -> Case:
    """Chain of thought: reasoning_first (reasoning, then the verdict) or answer_first with reasons."""
    from rewarddance.backend.scoring.prompts import pointwise_query

    images = make_images(n, bench.size, seed)
    overrides = {"cot": mode, "reason_tokens": bench.reason_tokens}
    config = bench.rm.settings(overrides)
    yes = answer_ids(bench.rm.vlm.tokenizer, mode == "reasoning_first")
    run_one = bench.naive.reasoning_first if mode == "reasoning_first" else bench.naive.answer_first

    def engine() -> Outcome:
        result = bench.rm.score(images, bench.prompt, reasons=True, **overrides)
        return Outcome(result.scores, result.reasons)

    def naive() -> Outcome:
        rows = [run_one(pointwise_query(v, bench.prompt, config), bench.reason_tokens, yes) for v in wrap(images)]
        return Outcome([s for s, _ in rows], [t for _, t in rows])

    return Case(mode, n, engine, naive)


def build_case(bench: Bench, name: str, n: int) -> Case:
    """Case `name` at size n, on its own images (seeded by the case, so no two cases share an image)."""
    seed = CASES.index(name) + 1
    if name == "pointwise":
        return pointwise_case(bench, n, seed)
    if name == "pairwise":
        return pairwise_case(bench, n, seed)
    if name == "few_shot":
        return few_shot_case(bench, n, seed)
    if name == "tournament":
        return tournament_case(bench, max(2, n), seed)
    return cot_case(bench, n, seed, name)


# --- measuring ------------------------------------------------------------------------------------------
def gemm_peak(device: str, dtype: torch.dtype, n: int, seconds: float = 1.0) -> float:
    """GFLOP/s of back-to-back n x n `torch.mm` in `dtype`: this machine's practical matrix-multiply peak."""
    a, b = torch.randn(n, n, device=device, dtype=dtype), torch.randn(n, n, device=device, dtype=dtype)
    out = torch.mm(a, b)
    synchronize(device)
    runs, start = 0, time.perf_counter()
    while runs < 3 or time.perf_counter() - start < seconds:
        torch.mm(a, b, out=out)
        synchronize(device)
        runs += 1
    return 2 * n**3 * runs / (time.perf_counter() - start) / 1e9


def cpu_attention_flops(query_shape: Any, key_shape: Any, value_shape: Any, *args: Any, **kwargs: Any) -> int:
    """FLOPs of the CPU flash-attention kernel, as PyTorch counts its CUDA attention kernels."""
    return sdpa_flop_count(query_shape, key_shape, value_shape)


def counted_flops(fn: Callable[[], Any]) -> tuple[int, int]:
    """FLOPs of one run of `fn` in all and inside the vision tower (Qwen-VL's `visual` module), counted with
    torch.utils.flop_counter plus the CPU attention kernel it lacks."""
    mapping = {}
    cpu_attention = getattr(torch.ops.aten, "_scaled_dot_product_flash_attention_for_cpu", None)
    if cpu_attention is not None:
        mapping[cpu_attention] = cpu_attention_flops
    with FlopCounterMode(display=False, custom_mapping=mapping) as counter:
        fn()
    vision = sum(sum(ops.values()) for name, ops in counter.get_flop_counts().items() if is_vision_tower(name))
    return counter.get_total_flops(), vision


def is_vision_tower(name: str) -> bool:
    """Whether the FLOP counter's module name is the vision tower itself: `...model.visual` when the model's forward
    runs it (the naive loop), its class name at the top when the engine runs it on its own (vision features once
    per visual)."""
    return name.endswith(".visual") or ("." not in name and "Vision" in name)


@dataclass
class Measurement:
    """One case's timings, agreement and engine FLOPs."""

    case: str
    judgements: int
    naive_s: float
    engine_s: float
    max_diff: float
    max_log_diff: float
    texts_identical: bool | None
    flops: int
    vision_flops: int
    forwards: int
    prefix_forwards: int
    cpu_use: float

    @property
    def ratio(self) -> float:
        """Engine throughput over the naive loop's."""
        return self.naive_s / self.engine_s

    def line(self, peak_gflops: float) -> str:
        """The case's report line (key=value fields)."""
        gflops = self.flops / self.engine_s / 1e9
        texts = "-" if self.texts_identical is None else ("yes" if self.texts_identical else "no")
        return (
            f"case={self.case} judgements={self.judgements} naive_img_s={self.judgements / self.naive_s:.3g} "
            f"engine_img_s={self.judgements / self.engine_s:.3g} ratio={self.ratio:.2f} "
            f"max_diff={self.max_diff:.2g} max_log_diff={self.max_log_diff:.2g} texts_identical={texts} "
            f"engine_gflop_s={gflops:.3g} peak_fraction={gflops / peak_gflops:.2f} "
            f"vision_flop_share={self.vision_flops / max(self.flops, 1):.2f} "
            f"forwards={self.forwards} prefix_forwards={self.prefix_forwards}"
        )


def score_differences(naive: list[float], engine: list[float]) -> tuple[float, float]:
    """Max |naive - engine| and max |log naive - log engine|."""
    diff = max(abs(a - b) for a, b in zip(naive, engine))
    log_diff = max(abs(math.log(max(a, 1e-30)) - math.log(max(b, 1e-30))) for a, b in zip(naive, engine))
    return diff, log_diff


def measure(case: Case, rm: Any, device: str) -> Measurement:
    """Time the naive loop and the engine on the case, compare their outputs, then count the engine's FLOPs."""
    naive, naive_s, naive_use = timed(case.naive, device)
    rm.scorer.stats.clear()
    engine, engine_s, engine_use = timed(case.engine, device)
    forwards, prefix_forwards = rm.scorer.stats["forwards"], rm.scorer.stats["prefix_forwards"]
    if len(naive.scores) != len(engine.scores):
        raise RuntimeError(f"{case.name}: {len(naive.scores)} naive scores but {len(engine.scores)} engine scores")
    diff, log_diff = score_differences(naive.scores, engine.scores)
    texts = None if naive.texts is None else naive.texts == engine.texts
    flops, vision_flops = counted_flops(case.engine)
    return Measurement(
        case.name,
        case.judgements,
        naive_s,
        engine_s,
        diff,
        log_diff,
        texts,
        flops,
        vision_flops,
        forwards,
        prefix_forwards,
        min(naive_use, engine_use),
    )


def agrees(m: Measurement, fp32: bool) -> bool:
    """True when the engine's scores (and greedy texts, in fp32) match the naive loop's."""
    if not fp32:
        return m.max_diff <= LOW_PRECISION_TOLERANCE
    return m.max_diff <= FP32_TOLERANCE and m.max_log_diff <= FP32_LOG_TOLERANCE and m.texts_identical is not False


# --- command line ---------------------------------------------------------------------------------------
def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    """Command-line options; --quick fills in the small CPU configuration."""
    parser = argparse.ArgumentParser(
        description=__doc__.split("\n\n")[0],
        epilog="--quick: the small (95M) config on the CPU in fp32 at the case sizes "
        + ", ".join(f"{k}={v}" for k, v in SIZES.items())
        + " (tournament: candidates), sized for 10 minutes on 2 quiet cores.",
    )
    add_model_options(parser)
    parser.add_argument("--cases", default=",".join(CASES), help=f"comma-separated, from {', '.join(CASES)}")
    parser.add_argument("--n", type=int, default=None, help="cap every case's size (tournament: >= 2 candidates)")
    parser.add_argument("--examples", type=int, default=4, help="few_shot: example images before each candidate")
    parser.add_argument("--reason-tokens", type=int, default=32, help="chain of thought: tokens to generate")
    parser.add_argument("--gemm-size", type=int, default=None, help="matrix side of the peak GEMM (CPU 2048, GPU 8192)")
    args = parser.parse_args(argv)
    resolve_model_options(parser, args)
    args.gemm_size = args.gemm_size or (8192 if args.device.startswith("cuda") else 2048)
    args.cases = [c.strip() for c in args.cases.split(",") if c.strip()]
    unknown = [c for c in args.cases if c not in CASES]
    if unknown or not args.cases:
        parser.error(f"--cases: unknown case(s) {', '.join(unknown) or '(none given)'}; choose from {', '.join(CASES)}")
    for name, value, low in (("--n", args.n, 1), ("--examples", args.examples, 1)):
        if value is not None and value < low:
            parser.error(f"{name} must be >= {low}, got {value}")
    if args.reason_tokens < 1 or args.gemm_size < 16:
        parser.error("--reason-tokens must be >= 1 and --gemm-size >= 16")
    return args


def case_size(name: str, cap: int | None) -> int:
    """The case's size: the issue's default, capped by --n."""
    return SIZES[name] if cap is None else min(SIZES[name], cap)


def run(args: argparse.Namespace, workdir: Path) -> int:
    """Measure the peak, load the judge, warm both paths up, then measure and print every chosen case."""
    from rewarddance.backend.devices import DTYPES
    from rewarddance.backend.reward_model import RewardModel

    dtype = DTYPES[args.dtype]
    print(f"device: {device_name(args.device)}  (torch {torch.__version__}, transformers {transformers_version()})")
    peak = gemm_peak(args.device, dtype, args.gemm_size)
    print(f"gemm_peak_gflop_s={peak:.4g}  (torch.mm {args.gemm_size}x{args.gemm_size} {args.dtype})")
    model_dir = args.model or str(write_checkpoint(args.config, workdir / args.config, args.device, dtype))
    rm = RewardModel.from_pretrained(
        model_dir,
        dtype=args.dtype,
        device=args.device,
        normalize="vocab",
        answer="Yes",
        max_batch_tokens=args.max_batch_tokens,
    )
    print(f"config: {args.model or args.config}  size={args.size}x{args.size}  dtype={args.dtype}")
    print(f"model: {describe(rm.vlm.model)}")
    bench = Bench(rm, NaiveLoop(Baseline.from_vlm(rm.vlm)), args.prompt, args.size, args.examples, args.reason_tokens)
    warm_up = cot_case(replace(bench, reason_tokens=2), 2, len(CASES) + 1, "answer_first")  # its own images
    warm_up.naive(), warm_up.engine()
    results = []
    for name in args.cases:
        m = measure(build_case(bench, name, case_size(name, args.n)), rm, args.device)
        print(m.line(peak), flush=True)
        results.append(m)
    fp32 = dtype == torch.float32
    failed = [m.case for m in results if not agrees(m, fp32)]
    busy = min(m.cpu_use for m in results)
    if not args.device.startswith("cuda") and busy < 0.75:
        print(f"warning: this process got {busy:.0%} of {torch.get_num_threads()} threads' time; timings are noisy")
    if failed:
        print(f"FAIL: engine and naive loop disagree in {', '.join(failed)}", file=sys.stderr)
    context = [m.ratio for m in results if m.case != "pointwise"]
    print(f"min_speedup={min(context):.2f}" if context else "min_speedup=nan")
    return 1 if failed else 0


def main(argv: list[str] | None = None) -> int:
    """Run the benchmark; exit status 1 when the engine and the naive loop disagree."""
    args = parse_args(argv)
    quiet_progress_bars()
    workdir = Path(tempfile.mkdtemp(prefix="context_bench_"))
    try:
        with torch.no_grad():
            return run(args, workdir)
    finally:
        shutil.rmtree(workdir, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
