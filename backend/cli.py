"""Command line: `rewarddance score | rerank | serve | search | train-rm | eval-rm | make-pairs | tiny-model`."""

from __future__ import annotations

import argparse
import csv
import json
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

DEFAULT_MODEL = "Qwen/Qwen2.5-VL-7B-Instruct"
CHUNK = 16


class CLIError(Exception):
    """A user error the CLI reports in one line and exits 2 for."""


def add_model_options(p: argparse.ArgumentParser) -> None:
    """Options shared by every command that loads a reward model."""
    g = p.add_argument_group("model")
    g.add_argument(
        "--model",
        default=None,
        help=f"checkpoint directory or hub id (default {DEFAULT_MODEL}); with --backend, a model name "
        "the server has configured (default: its default model)",
    )
    g.add_argument(
        "--backend",
        default=None,
        metavar="URL",
        help="score through a running `rewarddance serve` at URL instead of loading the model here",
    )
    g.add_argument("--token", default=None, help="bearer token for --backend (default: $REWARDDANCE_TOKEN)")
    g.add_argument("--dtype", default="auto", help="auto (bf16 on GPU, fp32 on CPU), bf16, fp16 or fp32")
    g.add_argument("--device", default="auto", help="auto, cpu, cuda, cuda:1, mps")
    g.add_argument("--attn", dest="attn_implementation", default=None, help="sdpa, eager, flash_attention_2")
    g.add_argument("--device-map", default=None, help="'auto' to spread a large model over several GPUs")
    g = p.add_argument_group("prompt")
    g.add_argument(
        "--question", default=None, help="custom question template, e.g. 'Does this image show \"{prompt}\"?'"
    )
    g.add_argument("--system", default=None, help="system prompt (default: the chat template's own)")
    g.add_argument(
        "--criteria",
        default=None,
        help="comma-separated presets (alignment, aesthetics, plausibility, text, overall, motion, "
        "temporal) or a free-form criteria text",
    )
    g.add_argument(
        "--cot",
        default=None,
        choices=["none", "answer_first", "reasoning_first"],
        help="chain of thought: answer_first (reasons after the verdict) or reasoning_first",
    )
    g.add_argument("--reasons", action="store_true", help="generate and return the model's reasons")
    g = p.add_argument_group("score")
    g.add_argument("--normalize", default=None, choices=["vocab", "yes_no"], help="softmax over vocabulary or yes/no")
    g.add_argument("--answer", default=None, help="answer word whose probability is the score (default Yes)")
    g.add_argument("--negative", default=None, help="the 'no' word for --normalize yes_no (default No)")
    g.add_argument("--answer-variants", action="store_true", help="also count case/space variants of the words")
    g.add_argument(
        "--max-batch-tokens",
        type=int,
        default=None,
        help="token budget per forward (default 16384 on GPU, 1536 on CPU)",
    )
    g = p.add_argument_group("pixel budget")
    g.add_argument("--min-pixels", type=int, default=None, help="minimum pixels per image")
    g.add_argument("--max-pixels", type=int, default=None, help="maximum pixels per image (the main speed knob)")
    g.add_argument("--video-max-pixels", type=int, default=None, help="maximum pixels per video frame")
    g.add_argument("--max-frames", type=int, default=32, help="maximum frames per video (default 32)")
    g.add_argument("--fps", type=float, default=2.0, help="video frames per second to sample (default 2)")


LOCAL_ONLY = {
    "dtype": "auto",
    "device": "auto",
    "attn_implementation": None,
    "device_map": None,
    "min_pixels": None,
    "max_pixels": None,
    "video_max_pixels": None,
    "max_frames": 32,
    "fps": 2.0,
    "max_batch_tokens": None,
}


def load_reward_model(args: argparse.Namespace) -> Any:
    """A RewardModel built from the options, or a client of --backend with the same methods."""
    if args.backend:
        from .client import RewardClient

        changed = [k for k, default in LOCAL_ONLY.items() if getattr(args, k) != default]
        if changed:
            flags = ", ".join("--" + k.replace("_", "-").replace("attn-implementation", "attn") for k in changed)
            raise CLIError(
                f"{flags} set(s) how a model is loaded here; with --backend the server's operator sets "
                "them (rewarddance serve / its config file)"
            )
        return BoundClient(RewardClient(args.backend, token=args.token, model=args.model), scoring_overrides(args))
    from .reward_model import RewardModel

    return RewardModel.from_pretrained(
        args.model or DEFAULT_MODEL,
        dtype=args.dtype,
        device=args.device,
        attn_implementation=args.attn_implementation,
        device_map=args.device_map,
        min_pixels=args.min_pixels,
        max_pixels=args.max_pixels,
        video_max_pixels=args.video_max_pixels,
        max_frames=args.max_frames,
        fps=args.fps,
        **scoring_overrides(args),
    )


class BoundClient:
    """A backend client that sends the command line's scoring options with every call (as a model keeps them)."""

    def __init__(self, client: Any, overrides: dict[str, Any]):
        self.client = client
        self.overrides = overrides

    def score(self, images: Any, prompt: Any, **kwargs: Any) -> Any:
        return self.client.score(images, prompt, **self.overrides, **kwargs)

    def compare(self, candidates: Any, reference: Any, prompt: Any, **kwargs: Any) -> Any:
        return self.client.compare(candidates, reference, prompt, **self.overrides, **kwargs)


def scoring_overrides(args: argparse.Namespace) -> dict[str, Any]:
    """ScoringConfig fields given on the command line."""
    from .scoring.config import normalize_criteria

    out = {k: getattr(args, k) for k in ("question", "system", "normalize", "answer", "negative", "cot")}
    if not getattr(args, "backend", None):
        out["max_batch_tokens"] = args.max_batch_tokens
    if args.criteria:
        out["criteria"] = normalize_criteria(args.criteria)
    if args.answer_variants:
        out["answer_variants"] = True
    return {k: v for k, v in out.items() if v is not None}


# --- score --------------------------------------------------------------------------------------------------
def cmd_score(args: argparse.Namespace) -> int:
    """Score files in input order and print one line (or a JSON array) per file."""
    from .media import load_visual_file

    visuals = [load_visual_file(f) for f in args.files]
    rm = load_reward_model(args)
    result = rm.score(visuals, args.prompt, reasons=args.reasons)
    rows = [{"path": f, "score": s} for f, s in zip(args.files, result.scores)]
    if result.reasons is not None:
        for row, reason in zip(rows, result.reasons):
            row["reasons"] = reason
    if args.json:
        print(json.dumps(rows, indent=2))
    else:
        for row in rows:
            print(f"{row['score']:.6f}\t{row['path']}")
    return 0


# --- rerank -------------------------------------------------------------------------------------------------
def list_media(directory: Path) -> list[Path]:
    """Image and video files under `directory`, sorted."""
    from .media import ANIMATION_EXTENSIONS, IMAGE_EXTENSIONS, VIDEO_EXTENSIONS

    if not directory.is_dir():
        raise CLIError(f"{str(directory)!r} is not a directory; pass the folder of generations")
    exts = IMAGE_EXTENSIONS | VIDEO_EXTENSIONS | ANIMATION_EXTENSIONS
    return sorted(p for p in directory.rglob("*") if p.is_file() and p.suffix.lower() in exts)


def read_prompts_file(path: Path) -> dict[str, str]:
    """Per-file prompts: JSONL {"file", "prompt"}, a JSON object, or a CSV/TSV with file,prompt columns."""
    if not path.is_file():
        raise CLIError(f"--prompts file {str(path)!r} does not exist")
    text = path.read_text(encoding="utf-8")
    try:
        if path.suffix.lower() == ".json":
            data = json.loads(text)
            if not isinstance(data, dict):
                raise CLIError(f"--prompts {path}: a .json file must be an object mapping file names to prompts")
            return {str(k): str(v) for k, v in data.items()}
        if path.suffix.lower() == ".jsonl":
            out = {}
            for n, line in enumerate(text.splitlines(), 1):
                if line.strip():
                    row = json.loads(line)
                    if "file" not in row or "prompt" not in row:
                        raise CLIError(f'--prompts {path}:{n}: each line needs "file" and "prompt"')
                    out[str(row["file"])] = str(row["prompt"])
            return out
    except json.JSONDecodeError as exc:
        raise CLIError(f"--prompts {path}: invalid JSON ({exc})") from exc
    delimiter = "\t" if path.suffix.lower() == ".tsv" else ","
    out = {}
    for n, row in enumerate(csv.reader(text.splitlines(), delimiter=delimiter), 1):
        if not row or (n == 1 and row[:2] == ["file", "prompt"]):
            continue
        if len(row) < 2:
            raise CLIError(f"--prompts {path}:{n}: expected two columns, file and prompt")
        out[row[0]] = row[1]
    return out


def prompt_for(path: Path, root: Path, args: argparse.Namespace, prompts: dict[str, str] | None) -> str:
    """The prompt of one file: from --prompts (by relative path, name or stem), else --prompt."""
    if prompts:
        for key in (str(path.relative_to(root)), path.name, path.stem):
            if key in prompts:
                return prompts[key]
    if args.prompt is None:
        raise CLIError(f"no prompt for {path.name}: add it to --prompts or pass --prompt")
    return args.prompt


def read_done(out: Path | None) -> list[dict]:
    """Rows already in an output file (for --resume)."""
    if out is None or not out.is_file():
        return []
    if out.suffix.lower() == ".csv":
        with out.open(newline="", encoding="utf-8") as fh:
            return [
                {"path": r["path"], "score": float(r["score"]), "prompt": r.get("prompt", "")}
                for r in csv.DictReader(fh)
            ]
    rows = []
    for line in out.read_text(encoding="utf-8").splitlines():
        if line.strip():
            try:
                rows.append(json.loads(line))
            except json.JSONDecodeError:
                continue  # a line cut short by an interrupted run
    return rows


def append_rows(out: Path | None, rows: list[dict]) -> None:
    """Append scored rows to the output (JSONL or CSV), so finished work survives an interrupt."""
    if out is None or not rows:
        return
    out.parent.mkdir(parents=True, exist_ok=True)
    if out.suffix.lower() == ".csv":
        new = not out.is_file() or out.stat().st_size == 0
        with out.open("a", newline="", encoding="utf-8") as fh:
            writer = csv.DictWriter(fh, fieldnames=["path", "score", "prompt"], extrasaction="ignore")
            if new:
                writer.writeheader()
            writer.writerows(rows)
    else:
        with out.open("a", encoding="utf-8") as fh:
            for row in rows:
                fh.write(json.dumps(row) + "\n")


def cmd_rerank(args: argparse.Namespace) -> int:
    """Score every image/video in a folder, write results, print and draw the top-k."""
    from tqdm import tqdm

    from .media import MediaError, load_visual_file, to_visual

    root = Path(args.directory)
    files = list_media(root)
    if not files:
        raise CLIError(f"no images or videos found in {str(root)!r}")
    if args.prompt is None and args.prompts is None:
        raise CLIError("pass --prompt TEXT or --prompts FILE")
    if args.mode == "pairwise" and not args.reference:
        raise CLIError("--mode pairwise needs --reference IMAGE (the image every candidate is compared to)")
    if args.out and Path(args.out).suffix.lower() not in (".jsonl", ".csv"):
        raise CLIError(f"--out must end in .jsonl or .csv, got {args.out!r}")
    if args.top_k is not None and args.top_k < 1:
        raise CLIError(f"--top-k must be a positive integer, got {args.top_k}")
    out = Path(args.out) if args.out else None
    if out is not None and out.exists() and not args.resume:
        raise CLIError(f"{str(out)!r} exists; pass --resume to continue it or choose another --out")
    prompts = read_prompts_file(Path(args.prompts)) if args.prompts else None
    done = read_done(out) if args.resume else []
    done_paths = {r["path"] for r in done}
    todo = [f for f in files if str(f) not in done_paths]
    reference = to_visual(args.reference, "--reference") if args.mode == "pairwise" else None
    rm = load_reward_model(args)
    rows, failed = list(done), []
    with tqdm(total=len(todo), desc="scoring", unit="file", disable=args.quiet) as bar:
        for start in range(0, len(todo), CHUNK):
            chunk, visuals, texts = [], [], []
            for f in todo[start : start + CHUNK]:
                try:
                    visuals.append(load_visual_file(f))
                    texts.append(prompt_for(f, root, args, prompts))
                    chunk.append(f)
                except MediaError as exc:
                    failed.append(str(f))
                    tqdm.write(f"skipped {f}: {exc}", file=sys.stderr)
                    bar.update(1)
            if not chunk:
                continue
            if reference is not None:
                scores = rm.compare(visuals, reference, texts).scores
            else:
                scores = rm.score(visuals, texts).scores
            new = [{"path": str(f), "score": s, "prompt": t} for f, s, t in zip(chunk, scores, texts)]
            append_rows(out, new)
            rows.extend(new)
            bar.update(len(chunk))
    if not rows:
        print(f"rewarddance: nothing could be scored ({len(failed)} unreadable file(s))", file=sys.stderr)
        return 1
    ranked = sorted(rows, key=lambda r: -r["score"])
    top = ranked[: args.top_k or len(ranked)]
    for rank, row in enumerate(top, 1):
        print(f"{rank:>4}  {row['score']:.6f}  {row['path']}")
    if failed:
        print(f"rewarddance: {len(failed)} unreadable file(s) skipped", file=sys.stderr)
    if args.sheet:
        from .contact_sheet import write_contact_sheet

        write_contact_sheet([Path(r["path"]) for r in top], [r["score"] for r in top], Path(args.sheet))
        print(f"contact sheet: {args.sheet}")
    return 0


# --- serve --------------------------------------------------------------------------------------------------
def serve_settings(args: argparse.Namespace) -> Any:
    """ServerSettings from --config plus flags (flags win)."""
    import os

    from .config_files import TOKEN_ENV, read_config_file
    from .server.settings import ModelSpec, ServerSettings, parse_bytes, parse_model_flag, settings_from_dict

    settings = settings_from_dict(read_config_file(args.config)) if args.config else ServerSettings()
    load = {
        k: getattr(args, k)
        for k in (
            "dtype",
            "device",
            "attn_implementation",
            "device_map",
            "min_pixels",
            "max_pixels",
            "video_max_pixels",
            "max_frames",
            "fps",
        )
        if getattr(args, k) is not None
    }
    for flag in args.model or []:
        name, path = parse_model_flag(flag)
        if name in settings.models and not args.config:
            raise CLIError(f"--model {flag!r}: the name {name!r} is used twice")
        settings.models[name] = ModelSpec(name=name, path=path, preload=args.preload, **load)
    for option, dest, attr in (
        ("--pin", "pin", "pinned"),
        ("--trust-remote-code", "trust_remote_code", "trust_remote_code"),
    ):
        for name in getattr(args, dest) or []:
            if name not in settings.models:
                raise CLIError(
                    f"{option} {name!r}: no model of that name; configured: {', '.join(settings.models) or 'none'}"
                )
            setattr(settings.models[name], attr, True)
    if args.preload:
        for spec in settings.models.values():
            spec.preload = True
    flags = {
        "host": args.host,
        "port": args.port,
        "default_model": args.default_model,
        "max_batch_tokens": args.max_batch_tokens,
        "max_delay_ms": args.max_delay_ms,
        "max_queue": args.max_queue,
        "request_timeout_s": args.request_timeout,
        "max_body_mb": args.max_body_mb,
        "grace_period_s": args.grace_period,
    }
    for key, value in flags.items():
        if value is not None:
            setattr(settings, key, value)
    for key in ("gpu_memory", "cpu_memory"):
        if getattr(args, key) is not None:
            setattr(settings, key, parse_bytes(getattr(args, key), "--" + key.replace("_", "-")))
    settings.token = args.token or settings.token or os.environ.get(TOKEN_ENV) or None
    return settings.validate()


def cmd_serve(args: argparse.Namespace) -> int:
    """Run the HTTP scoring backend until SIGTERM / Ctrl+C."""
    from .server.run import run

    return run(serve_settings(args))


def add_serve_options(p: argparse.ArgumentParser) -> None:
    """Options of `rewarddance serve`."""
    p.add_argument("--config", default=None, help="TOML or YAML file with server settings and [models.NAME] tables")
    p.add_argument(
        "--model",
        action="append",
        metavar="NAME=PATH",
        help="serve a checkpoint directory or hub id under NAME (repeatable; the first is the default)",
    )
    p.add_argument("--default-model", default=None, help="model used when a request names none")
    p.add_argument("--host", default=None, help="address to bind (default 127.0.0.1; others need --token)")
    p.add_argument("--port", type=int, default=None, help="port (default 8765; 0 picks a free one)")
    p.add_argument("--token", default=None, help="bearer token clients must send (default: $REWARDDANCE_TOKEN)")
    p.add_argument("--preload", action="store_true", help="load every model at start instead of on first use")
    p.add_argument("--pin", action="append", metavar="NAME", help="never evict this model (repeatable)")
    p.add_argument(
        "--trust-remote-code",
        action="append",
        metavar="NAME",
        help="allow this model's own Python code from its checkpoint (off by default; repeatable)",
    )
    g = p.add_argument_group("batching and limits")
    g.add_argument(
        "--max-batch-tokens", type=int, default=None, help="tokens per forward (default 16384 GPU / 1536 CPU)"
    )
    g.add_argument("--max-delay-ms", type=float, default=None, help="how long a request waits for company (default 10)")
    g.add_argument("--max-queue", type=int, default=None, help="queued requests per model before 503 (default 1024)")
    g.add_argument("--request-timeout", type=float, default=None, help="seconds per request before 504 (default 300)")
    g.add_argument("--max-body-mb", type=float, default=None, help="request body limit in MB (default 64)")
    g.add_argument("--gpu-memory", default=None, help="GPU bytes loaded models may use, e.g. 40GB (LRU eviction)")
    g.add_argument("--cpu-memory", default=None, help="CPU bytes loaded models may use, e.g. 16GB")
    g.add_argument(
        "--grace-period", type=float, default=None, help="seconds in-flight requests get at shutdown (default 25)"
    )
    g = p.add_argument_group("loading (models given with --model)")
    g.add_argument("--dtype", default=None, help="auto, bf16, fp16 or fp32")
    g.add_argument("--device", default=None, help="auto, cpu, cuda, cuda:1")
    g.add_argument("--attn", dest="attn_implementation", default=None, help="sdpa, eager, flash_attention_2")
    g.add_argument("--device-map", default=None, help="'auto' to spread a model over several GPUs")
    g.add_argument("--min-pixels", type=int, default=None)
    g.add_argument("--max-pixels", type=int, default=None)
    g.add_argument("--video-max-pixels", type=int, default=None)
    g.add_argument("--max-frames", type=int, default=None)
    g.add_argument("--fps", type=float, default=None)


# --- search ---------------------------------------------------------------------------------------------------
def cmd_search(args: argparse.Namespace) -> int:
    """Noise search over a diffusers pipeline with a reward model; write the best image."""
    from dataclasses import asdict

    from .generators.diffusers_adapter import generator_for, load_pipeline
    from .reward_model import RewardModel
    from .rewards import ModelReward
    from .search.algorithms import ALGORITHMS

    if args.algorithm not in ALGORITHMS:
        raise CLIError(f"--algorithm must be one of {', '.join(ALGORITHMS)}, got {args.algorithm!r}")
    if args.budget < args.steps:
        raise CLIError(
            f"--budget ({args.budget} denoiser calls) must cover at least one sample of --steps {args.steps}"
        )
    if not args.out.lower().endswith((".png", ".jpg", ".jpeg", ".webp")):
        raise CLIError(
            f"--out must be an image file name (.png, .jpg, .webp; videos are written as an animated "
            f".webp), got {args.out!r}"
        )
    device = (
        "cuda"
        if args.device == "auto" and __import__("torch").cuda.is_available()
        else ("cpu" if args.device == "auto" else args.device)
    )
    dtype = "fp32" if args.dtype == "auto" and device == "cpu" else ("bf16" if args.dtype == "auto" else args.dtype)
    try:
        gen = generator_for(
            load_pipeline(args.pipeline, device, dtype),
            args.prompt,
            args.negative,
            args.guidance,
            args.height,
            args.width,
            args.frames,
        )
    except ValueError as exc:
        raise CLIError(f"--pipeline: {exc}") from exc
    rm = RewardModel.from_pretrained(args.reward_model, dtype=dtype, device=device)
    reward = ModelReward(rm, args.prompt, options={"criteria": args.criteria} if args.criteria else {})
    result = ALGORITHMS[args.algorithm](gen, reward, args.steps, args.budget, seed=args.seed)
    write_search_output(result.image[0], args.out)
    report = {
        "score": result.score,
        "denoiser_calls": result.denoiser_calls,
        "scorer_calls": result.scorer_calls,
        "out": args.out,
        "history": [asdict(c) for c in result.history],
        "seconds": result.seconds,
    }
    if args.json:
        print(json.dumps(report, indent=2))
    else:
        print(
            f"{args.algorithm}: best score {result.score:.6f} of {len(result.history)} candidates, "
            f"{result.denoiser_calls} denoiser calls; wrote {args.out}"
        )
    return 0


def write_search_output(image: Any, out: str) -> None:
    """Write an image [H, W, 3] or a video [T, H, W, 3] (an animated image, 8 fps) in [0, 1]."""
    from PIL import Image as PILImage

    arr = (image.detach().float().clamp(0, 1) * 255).round().byte().cpu().numpy()
    Path(out).parent.mkdir(parents=True, exist_ok=True)
    if arr.ndim == 4:
        frames = [PILImage.fromarray(f) for f in arr]
        frames[0].save(out, save_all=True, append_images=frames[1:], duration=125, loop=0)
    else:
        PILImage.fromarray(arr).save(out)


# --- RL fine-tuning of generators ---------------------------------------------------------------------------------
def cmd_train(args: argparse.Namespace) -> int:
    """LoRA RL fine-tuning of a generator with the reward (raft, refl, grpo); Ctrl+C checkpoints, the same command resumes."""
    from tqdm import tqdm

    from .rl.config import load_rl_config
    from .rl.run import distributed, train_rl

    cfg = load_rl_config(args.config)
    if args.steps is not None:
        cfg.steps = args.steps
        cfg.validate()
    if args.accelerate:
        from accelerate import PartialState

        state = PartialState()  # joins the process group `accelerate launch` set up
        cfg.generator.setdefault("device", str(state.device))  # one GPU per process
        for reward in cfg.rewards:
            reward.setdefault("device", str(state.device))
    main_process = distributed()[0] == 0
    with tqdm(
        total=cfg.steps, desc=f"train {cfg.algorithm}", unit="step", disable=args.quiet or not main_process
    ) as bar:

        def progress(step: int, total: int, row: dict) -> None:
            bar.n = step
            bar.set_postfix({"reward": f"{row['reward_mean']:.3f}", "std": f"{row['window_std']:.3f}"}, refresh=False)
            bar.refresh()

        summary = train_rl(cfg, progress=progress)
    if not main_process:
        return 0
    if summary["interrupted"]:
        print(
            f"interrupted at step {summary['step']}; checkpoint in {summary['checkpoint']} (run the same command to resume)"
        )
        return 130
    print(
        json.dumps(summary, indent=2)
        if args.json
        else f"{cfg.algorithm}: held-out reward {summary['reward_before']:.4f} -> {summary['reward_after']:.4f} after "
        f"{summary['step']} steps; LoRA: {', '.join(summary['files'].values())}"
    )
    return 0


# --- reward-model training -------------------------------------------------------------------------------------
def cmd_train_rm(args: argparse.Namespace) -> int:
    """Train a reward model from a config file; Ctrl+C checkpoints, and the same command resumes."""
    from tqdm import tqdm

    from .training.trainer import load_train_config, train_reward_model

    cfg = load_train_config(args.config)
    if args.steps is not None:
        cfg.steps = args.steps
        cfg.validate()
    with tqdm(total=cfg.steps, desc="training", unit="step", disable=args.quiet) as bar:

        def progress(step: int, total: int, metrics: dict) -> None:
            bar.n = step
            bar.set_postfix({k: f"{v:.3f}" for k, v in metrics.items()}, refresh=False)
            bar.refresh()

        result = train_reward_model(cfg, progress)
    if result["interrupted"]:
        print(
            f"rewarddance: interrupted at step {result['step']}; checkpoint {result['checkpoint']}. "
            "Run the same command to continue.",
            file=sys.stderr,
        )
        return 130
    summary = {k: v for k, v in result["eval"].items() if k != "reliability"}
    print(json.dumps({"model": result["model"], "step": result["step"], "eval": summary}, indent=2))
    return 0


def cmd_eval_rm(args: argparse.Namespace) -> int:
    """Pairwise / pointwise accuracy, calibration and spread on one or two (in-domain, out-of-domain) sets."""
    from .reward_model import RewardModel
    from .training.data import load_pairs
    from .training.evaluation import evaluate_pairs

    sets = {"in_domain": load_pairs(args.pairs)}
    if args.ood_pairs:
        sets["out_of_domain"] = load_pairs(args.ood_pairs)
    rm = RewardModel.from_pretrained(args.model, dtype=args.dtype, device=args.device, max_pixels=args.max_pixels)
    report = {name: evaluate_pairs(rm, pairs) for name, pairs in sets.items()}
    if args.json:
        print(json.dumps(report, indent=2))
        return 0
    for name, m in report.items():
        pw = "n/a" if m["pairwise_accuracy"] is None else f"{m['pairwise_accuracy']:.4f}"
        pt = "n/a" if m["pointwise_accuracy"] is None else f"{m['pointwise_accuracy']:.4f}"
        ece = "n/a" if m["ece"] is None else f"{m['ece']:.4f}"
        print(
            f"{name}: {m['pairs']} pairs ({m['ties']} ties)  pairwise accuracy {pw}  pointwise accuracy {pt}  "
            f"ECE {ece}  score mean {m['score_mean']:.4g} std {m['score_std']:.4g}"
        )
        for row in m["reliability"]:
            print(
                f"    P in {row['bin']}: {row['count']:>5} predictions, mean P {row['mean_p']:.3f}, "
                f"observed {row['frequency']:.3f}"
            )
    return 0


def cmd_make_pairs(args: argparse.Namespace) -> int:
    """Write the synthetic preference set (real photos vs visibly edited copies)."""
    from .training.synthetic import EDITS, make_synthetic_pairs

    edits = tuple(e.strip() for e in args.edits.split(",")) if args.edits else EDITS
    bad = [e for e in edits if e not in EDITS]
    if bad:
        raise CLIError(f"--edits: unknown edit(s) {', '.join(bad)}; choose from {', '.join(EDITS)}")
    if args.n < 2 or args.size < 28:
        raise CLIError("--n must be at least 2 and --size at least 28")
    print(make_synthetic_pairs(args.out, n=args.n, size=args.size, edits=edits, seed=args.seed))
    return 0


# --- tiny-model ---------------------------------------------------------------------------------------------
def cmd_tiny_model(args: argparse.Namespace) -> int:
    """Write a tiny random-weight checkpoint for tests and offline demos."""
    from .vlm.tiny import write_tiny_checkpoint

    path = write_tiny_checkpoint(args.family, args.out, seed=args.seed)
    print(path)
    return 0


def build_parser() -> argparse.ArgumentParser:
    """The argument parser of every subcommand."""
    parser = argparse.ArgumentParser(prog="rewarddance", description='Generative VLM reward models: P("yes") scores.')
    sub = parser.add_subparsers(dest="command", required=True)

    p = sub.add_parser("score", help="score files and print one score per file, in input order")
    p.add_argument("files", nargs="+", help="image or video files")
    p.add_argument("--prompt", required=True, help="the generation prompt the files are judged against")
    p.add_argument("--json", action="store_true", help='print a JSON array of {"path", "score"}')
    add_model_options(p)
    p.set_defaults(func=cmd_score)

    p = sub.add_parser("rerank", help="score a folder of generations and rank them")
    p.add_argument("directory", help="folder of images and videos (searched recursively)")
    p.add_argument("--prompt", default=None, help="prompt shared by all files")
    p.add_argument("--prompts", default=None, help="per-file prompts: .jsonl {file,prompt}, .json, .csv or .tsv")
    p.add_argument("--mode", default="pointwise", choices=["pointwise", "pairwise"])
    p.add_argument("--reference", default=None, help="reference image for --mode pairwise")
    p.add_argument("--top-k", type=int, default=None, help="how many to print and draw (default all)")
    p.add_argument("--out", default=None, help="write every score to results.jsonl or results.csv")
    p.add_argument("--resume", action="store_true", help="skip files already in --out and append the rest")
    p.add_argument("--sheet", default=None, help="write a contact sheet PNG of the top-k with scores drawn on")
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    add_model_options(p)
    p.set_defaults(func=cmd_rerank)

    p = sub.add_parser("serve", help="run the HTTP scoring backend (model loading, dynamic batching)")
    add_serve_options(p)
    p.set_defaults(func=cmd_serve)

    p = sub.add_parser("search", help="reward-guided noise search over a diffusers pipeline")
    p.add_argument(
        "--pipeline", required=True, help="diffusers pipeline directory or hub id (SD 1.x/2.x, SDXL, SD3, Flux, Wan)"
    )
    p.add_argument("--prompt", required=True)
    p.add_argument("--negative", default="", help="negative prompt")
    p.add_argument(
        "--algorithm",
        default="search_over_paths",
        help="best_of_n, random_search, zero_order, search_over_paths or noise_gradient",
    )
    p.add_argument("--budget", type=int, default=64, help="denoiser calls to spend")
    p.add_argument("--steps", type=int, default=20, help="sampling steps per image")
    p.add_argument(
        "--guidance",
        type=float,
        default=None,
        help="CFG scale (Flux: its guidance embedding); default per family: SD 7.5, SDXL 5, SD3 7, Flux 3.5, Wan 5",
    )
    p.add_argument("--height", type=int, default=None)
    p.add_argument("--width", type=int, default=None)
    p.add_argument("--frames", type=int, default=None, help="video frames (Wan; default 81)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--reward-model", default=DEFAULT_MODEL, help="reward model checkpoint or hub id")
    p.add_argument("--criteria", default=None, help="criteria presets or text for the reward model")
    p.add_argument("--dtype", default="auto")
    p.add_argument("--device", default="auto")
    p.add_argument("--out", default="best.png", help="where to write the best image")
    p.add_argument("--json", action="store_true", help="print the score and every candidate as JSON")
    p.set_defaults(func=cmd_search)

    p = sub.add_parser("train", help="LoRA RL fine-tuning of a generator with the reward (raft, refl, grpo)")
    p.add_argument("--config", required=True, help="TOML or YAML run config (see README)")
    p.add_argument("--steps", type=int, default=None, help="override the config's steps")
    p.add_argument("--accelerate", action="store_true", help="running under `accelerate launch` (several GPUs)")
    p.add_argument("--json", action="store_true", help="print the summary as JSON")
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    p.set_defaults(func=cmd_train)

    p = sub.add_parser("train-rm", help="fine-tune a VLM into a reward model from preference pairs")
    p.add_argument("--config", required=True, help="TOML or YAML training config (see README)")
    p.add_argument("--steps", type=int, default=None, help="override the config's steps")
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    p.set_defaults(func=cmd_train_rm)

    p = sub.add_parser("eval-rm", help="evaluate a reward model on preference pairs")
    p.add_argument("--model", required=True, help="checkpoint directory or hub id")
    p.add_argument("--pairs", required=True, help="in-domain pairs (.jsonl or a folder of pairs)")
    p.add_argument("--ood-pairs", default=None, help="out-of-domain pairs, reported separately")
    p.add_argument("--dtype", default="auto")
    p.add_argument("--device", default="auto")
    p.add_argument("--max-pixels", type=int, default=None)
    p.add_argument("--json", action="store_true", help="print every metric as JSON")
    p.set_defaults(func=cmd_eval_rm)

    p = sub.add_parser("make-pairs", help="write a synthetic preference set from sample photos")
    p.add_argument("--out", required=True, help="output folder (images/ and pairs.jsonl)")
    p.add_argument("--n", type=int, default=200, help="number of pairs")
    p.add_argument("--size", type=int, default=112, help="image side in pixels")
    p.add_argument("--edits", default=None, help="comma-separated: colour_cast, blur, pasted_block (default all)")
    p.add_argument("--seed", type=int, default=0)
    p.set_defaults(func=cmd_make_pairs)

    p = sub.add_parser("tiny-model", help="write a tiny random-weight checkpoint (tests, offline demo)")
    p.add_argument("--family", required=True, choices=["qwen2_vl", "qwen2_5_vl", "qwen3_vl", "internvl"])
    p.add_argument("--out", required=True, help="output directory")
    p.add_argument("--seed", type=int, default=0)
    p.set_defaults(func=cmd_tiny_model)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the `rewarddance` console script and `python -m rewarddance`."""
    from .client import BackendError
    from .media import MediaError
    from .vlm.loading import ModelLoadError

    args = build_parser().parse_args(argv)
    try:
        return int(args.func(args) or 0)
    except (CLIError, MediaError, ModelLoadError, BackendError, ValueError) as exc:
        print(f"rewarddance: error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("rewarddance: interrupted; finished rows are kept in --out (use --resume)", file=sys.stderr)
        return 130


if __name__ == "__main__":
    raise SystemExit(main())
