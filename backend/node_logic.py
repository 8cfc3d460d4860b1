"""What each ComfyUI node computes, as plain functions over tensors (no ComfyUI imports; tested in CI).

A reward model here is anything with `RewardModel`'s methods: a local `RewardModel` or a
`client.RewardClient` of a `rewarddance serve` backend. Long work goes in chunks and calls
`progress(done, total)` after each, which the nodes use for ComfyUI's progress bar and interrupt check.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch
from PIL import Image as PILImage

from .annotate import annotate_batch, label_for
from .media import Image, Video, images_from_batch, video_from_frames
from .ranking import check_tournament_size, ranking_order
from .score_text import format_score, item_name
from .scoring.config import COT_MODES, ScoringConfig
from .scoring.criteria import CRITERIA_PRESETS
from .scoring.prompts import FewShotExample
from .selection import check_scores, select_top_k, take_items, take_latents, video_groups

Progress = Callable[[int, int], None]
CHUNK = 16  # items per engine call between progress updates


@dataclass(frozen=True)
class RewardCriteria:
    """What to judge: presets and/or free text, the chain-of-thought mode, and few-shot examples."""

    criteria: tuple[str, ...] = ()
    cot: str = "none"
    few_shot: tuple[FewShotExample, ...] = field(default=(), compare=False)
    sampling: tuple[tuple[str, Any], ...] = ()  # (name, value) of samples / temperature / top_p / seed not at default

    def overrides(self) -> dict[str, Any]:
        """Scoring options for RewardModel methods."""
        out: dict[str, Any] = {"cot": self.cot, **dict(self.sampling)}
        if self.criteria:
            out["criteria"] = list(self.criteria)
        return out

    def reward_options(self) -> dict[str, Any]:
        """Options for a reward inside search or training loops: the criteria only (no chain of thought there)."""
        return {k: v for k, v in self.overrides().items() if k not in ("cot", *SAMPLING_DEFAULTS)}


SAMPLING_DEFAULTS = {"samples": 1, "temperature": 0.0, "top_p": 1.0, "seed": 0}


def build_criteria(
    presets: list[str],
    text: str = "",
    cot: str = "none",
    examples: torch.Tensor | None = None,
    verdicts: str = "",
    example_prompt: str = "",
    samples: int = 1,
    temperature: float = 0.0,
    top_p: float = 1.0,
    seed: int = 0,
) -> RewardCriteria:
    """Criteria from preset names, free text, a CoT mode, optional example images with yes/no verdicts, and
    sampled judgements (samples=k: the mean P(yes) of k reasoning-first judgements)."""
    unknown = [p for p in presets if p not in CRITERIA_PRESETS]
    if unknown:
        raise ValueError(f"criteria: unknown preset(s) {', '.join(unknown)}; choose from {', '.join(CRITERIA_PRESETS)}")
    if cot not in COT_MODES:
        raise ValueError(f"cot must be one of {', '.join(COT_MODES)}, got {cot!r}")
    criteria = tuple(presets) + ((text.strip(),) if text and text.strip() else ())
    given = {"samples": samples, "temperature": temperature, "top_p": top_p, "seed": seed}
    ScoringConfig(cot=cot).with_overrides(**given)  # ValueError naming the input when a value cannot work
    sampling = tuple((k, v) for k, v in given.items() if v != SAMPLING_DEFAULTS[k])
    shots: tuple[FewShotExample, ...] = ()
    if examples is not None:
        rows = images_from_batch(examples, "examples")
        words = [w.strip().lower() for w in verdicts.replace("\n", ",").split(",") if w.strip()]
        if len(words) != len(rows):
            raise ValueError(
                f"verdicts: got {len(words)} verdicts for {len(rows)} example images; write one yes/no "
                "per example, comma-separated (e.g. 'yes, no, yes')"
            )
        bad = [w for w in words if w not in ("yes", "no", "true", "false", "1", "0")]
        if bad:
            raise ValueError(f"verdicts: {bad[0]!r} is not yes or no")
        shots = tuple(
            FewShotExample(exact_image(r.tensor), w in ("yes", "true", "1"), example_prompt.strip() or None)
            for r, w in zip(rows, words)
        )
    elif verdicts.strip():
        raise ValueError("verdicts: connect the example images they describe (examples input), or clear the verdicts")
    return RewardCriteria(criteria, cot, shots, sampling)


def exact_image(row: torch.Tensor) -> Image:
    """An IMAGE row as 8-bit PIL, so it is preprocessed exactly like the same picture read from a file."""
    arr = (row[..., :3].detach().float().clamp(0, 1) * 255.0).round().to(torch.uint8).cpu().numpy()
    return Image(pil=PILImage.fromarray(np.ascontiguousarray(arr)), source="IMAGE")


def to_items(images: torch.Tensor, exact: bool) -> list[Image]:
    """IMAGE batch -> engine images: 8-bit PIL (exact, like files) or float tensors (fast, on device)."""
    rows = images_from_batch(images, "images")
    return [exact_image(r.tensor) for r in rows] if exact else rows


def to_videos(frames: torch.Tensor, fps: float, frames_per_video: int) -> list[Video]:
    """Stacked frames [N*T, H, W, C] -> N `Video`s of T frames."""
    if not isinstance(frames, torch.Tensor) or frames.ndim != 4:
        raise ValueError("images: expected video frames as an IMAGE batch [frames, H, W, C]")
    return [
        video_from_frames(frames[g.start : g.stop], fps, item_name(i, "video"))
        for i, g in enumerate(video_groups(frames.shape[0], frames_per_video))
    ]


def _chunked(
    items: list[Any], fn: Callable[[list[Any]], Any], progress: Progress | None
) -> tuple[list[float], list[str] | None]:
    """Call `fn` on chunks of items; concatenate scores and reasons; report progress after each chunk."""
    scores: list[float] = []
    reasons: list[str] | None = None
    for start in range(0, len(items), CHUNK):
        result = fn(items[start : start + CHUNK])
        scores.extend(result.scores)
        if result.reasons is not None:
            reasons = (reasons or []) + list(result.reasons)
        if progress is not None:
            progress(min(start + CHUNK, len(items)), len(items))
    return scores, reasons


@dataclass
class Scored:
    """Scores in input order, optional reasons, a one-line-per-item summary, a labelled preview and the rows
    the web extension draws (`score_rows`)."""

    scores: list[float]
    reasons: list[str] | None
    summary: str
    preview: torch.Tensor | None
    rows: list[dict] = field(default_factory=list)


def summarize(scores: list[float], what: str = "image") -> str:
    """Ranked summary text, one '#rank  what number: score' line per item (numbers 1-based: '#1  image 3: 0.8123')."""
    order = ranking_order(scores)
    return "\n".join(f"#{r}  {item_name(i, what)}: {format_score(scores[i])}" for r, i in enumerate(order, 1))


def score_rows(scores: list[float], what: str = "image", kept: list[int] | None = None) -> list[dict]:
    """Per-item rows for the web extension: 0-based `index` (as the indices outputs), the 1-based `name` a person
    reads, the score, its 1-based rank and, when `kept` is given, whether the item was kept."""
    rows = [
        {"index": i, "name": item_name(i, what), "score": s, "rank": r}
        for i, (s, r) in enumerate(zip(scores, ranks_of(scores)))
    ]
    if kept is not None:
        for row in rows:
            row["kept"] = row["index"] in kept
    return rows


def preview_labels(scores: list[float]) -> list[str]:
    """The label drawn on each preview image: its rank and score ('#1  0.8123')."""
    return [label_for(s, r) for s, r in zip(scores, ranks_of(scores))]


def ranks_of(scores: list[float]) -> list[int]:
    """1-based rank of each item (ties: lower index ranks first)."""
    order = ranking_order(scores)
    ranks = [0] * len(scores)
    for r, i in enumerate(order, 1):
        ranks[i] = r
    return ranks


def score_images(
    rm: Any,
    images: torch.Tensor,
    prompt: str,
    criteria: RewardCriteria | None = None,
    exact: bool = True,
    reasons: bool = False,
    progress: Progress | None = None,
) -> Scored:
    """Pointwise scores of an IMAGE batch, with a labelled preview."""
    check_prompt(prompt)
    criteria = criteria or RewardCriteria()
    items = to_items(images, exact)
    scores, texts = _chunked(
        items,
        lambda chunk: rm.score(
            chunk, prompt, few_shot=list(criteria.few_shot) or None, reasons=reasons, **criteria.overrides()
        ),
        progress,
    )
    preview = annotate_batch(images, preview_labels(scores))
    return Scored(scores, texts, summarize(scores), preview, score_rows(scores))


def score_videos(
    rm: Any,
    frames: torch.Tensor,
    fps: float,
    frames_per_video: int,
    prompt: str,
    criteria: RewardCriteria | None = None,
    reasons: bool = False,
    progress: Progress | None = None,
) -> Scored:
    """Pointwise scores of videos given as stacked frames; the preview is each video's first frame."""
    check_prompt(prompt)
    criteria = criteria or RewardCriteria()
    videos = to_videos(frames, fps, frames_per_video)
    scores, texts = _chunked(
        videos,
        lambda chunk: rm.score(
            chunk, prompt, few_shot=list(criteria.few_shot) or None, reasons=reasons, **criteria.overrides()
        ),
        progress,
    )
    firsts = frames[[g.start for g in video_groups(frames.shape[0], frames_per_video)]]
    preview = annotate_batch(firsts, preview_labels(scores))
    return Scored(scores, texts, summarize(scores, "video"), preview, score_rows(scores, "video"))


def compare_to_reference(
    rm: Any,
    candidates: torch.Tensor,
    reference: torch.Tensor,
    prompt: str,
    criteria: RewardCriteria | None = None,
    exact: bool = True,
    reasons: bool = False,
    progress: Progress | None = None,
) -> Scored:
    """P(candidate beats reference) for each candidate image."""
    check_prompt(prompt)
    criteria = criteria or RewardCriteria()
    refs = to_items(reference, exact)
    if len(refs) != 1:
        raise ValueError(f"reference: connect exactly one image, got a batch of {len(refs)}")
    items = to_items(candidates, exact)
    scores, texts = _chunked(
        items, lambda chunk: rm.compare(chunk, refs[0], prompt, reasons=reasons, **criteria.overrides()), progress
    )
    preview = annotate_batch(candidates, preview_labels(scores))
    return Scored(scores, texts, summarize(scores, "candidate"), preview, score_rows(scores, "candidate"))


@dataclass
class BestOfN:
    """The chosen items in rank order, their latents, indices and scores, every score, a summary and the rows the
    web extension draws."""

    images: torch.Tensor
    latent: dict[str, Any] | None
    indices: list[int]
    scores: list[float]
    all_scores: list[float]
    summary: str
    rows: list[dict] = field(default_factory=list)


def best_of_n(
    rm: Any,
    images: torch.Tensor,
    prompt: str,
    top_k: int = 1,
    criteria: RewardCriteria | None = None,
    threshold: float | None = None,
    latent: dict[str, Any] | None = None,
    precomputed: list[float] | None = None,
    frames_per_video: int = 1,
    fps: float = 16.0,
    exact: bool = True,
    progress: Progress | None = None,
) -> BestOfN:
    """Score N images (or videos of `frames_per_video` frames) unless scores are given (one per item, e.g. a
    Score Images node's `scores` list), keep the top k."""
    n = len(video_groups(images.shape[0], frames_per_video))
    if precomputed:
        scores = check_scores(precomputed, n)
    elif rm is None:
        raise ValueError("reward_model: connect a reward model, or give precomputed scores")
    elif frames_per_video > 1:
        scores = score_videos(rm, images, fps, frames_per_video, prompt, criteria, progress=progress).scores
    else:
        scores = score_images(rm, images, prompt, criteria, exact, progress=progress).scores
    chosen = select_top_k(scores, top_k, threshold)
    picked = take_items(images, chosen.indices, frames_per_video)
    latents = take_latents(latent, chosen.indices, n) if latent is not None else None
    what = "video" if frames_per_video > 1 else "image"
    summary = summarize(scores, what)
    if chosen.below_threshold:
        summary = f"no item reached the threshold {format_score(threshold)}; kept the best one\n" + summary
    rows = score_rows(scores, what, kept=chosen.indices)
    return BestOfN(picked, latents, chosen.indices, chosen.scores, scores, summary, rows)


@dataclass
class Ranked:
    """A tournament: candidates in rank order, wins and mean win probability per candidate, a summary and the
    rows the web extension draws."""

    images: torch.Tensor
    ranking: list[int]
    wins: list[int]
    mean_win_probability: list[float]
    summary: str
    rows: list[dict] = field(default_factory=list)


def tournament(
    rm: Any, images: torch.Tensor, prompt: str, criteria: RewardCriteria | None = None, exact: bool = True
) -> Ranked:
    """Pairwise round robin among the candidates (the paper's way of picking references)."""
    check_prompt(prompt)
    criteria = criteria or RewardCriteria()
    items = to_items(images, exact)
    check_tournament_size(len(items), "images")
    result = rm.tournament(items, prompt, **criteria.overrides())
    ordered = images[torch.tensor(result.ranking, dtype=torch.long, device=images.device)]
    wins, mean_p = list(result.wins), list(result.mean_win_probability)
    lines = [
        f"#{r}  {item_name(j)}: {wins[j]} wins, mean P(beats) {format_score(mean_p[j])}"
        for r, j in enumerate(result.ranking, 1)
    ]
    position = {j: r for r, j in enumerate(result.ranking, 1)}
    rows = [
        {"index": j, "name": item_name(j), "score": mean_p[j], "rank": position[j], "wins": wins[j]}
        for j in range(len(wins))
    ]
    return Ranked(ordered, list(result.ranking), wins, mean_p, "\n".join(lines), rows)


def one_value(values: list[Any], name: str) -> Any:
    """The single value of a node input that ComfyUI passes as a list (nodes taking list inputs get every input
    as one); None when it is not connected."""
    if not values:
        return None
    if len(values) > 1:
        raise ValueError(
            f"{name}: got a list of {len(values)} values where one is expected; connect a single {name} "
            "(batch images with Batch Images, not an image list)"
        )
    return values[0]


def check_prompt(prompt: Any) -> None:
    """The generation prompt must be non-empty text."""
    if not isinstance(prompt, str) or not prompt.strip():
        raise ValueError("text: enter the prompt the images were generated from (it is what they are judged against)")


def limit_frames(
    frames: torch.Tensor, fps: float, frames_per_video: int, max_frames: int
) -> tuple[torch.Tensor, float, int]:
    """Evenly subsample each stacked video to at most `max_frames` frames; the fps drops to match."""
    groups = video_groups(frames.shape[0], frames_per_video)
    if max_frames < 1:
        raise ValueError(f"max_frames must be at least 1, got {max_frames}")
    if frames_per_video <= max_frames:
        return frames, fps, frames_per_video
    keep = np.linspace(0, frames_per_video - 1, max_frames).round().astype(int).tolist()
    rows = [g.start + k for g in groups for k in keep]
    return frames[rows], fps * max_frames / frames_per_video, max_frames
