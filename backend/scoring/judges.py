"""Judge presets: which prompt a checkpoint was trained on, and how its answer token's distribution becomes a score.

`yes_no` is the project's own wording (prompts.py) read as P("yes") (answer.py). A public judge that answers in
text is read at the answer position instead of parsing what it would generate:

- pointwise ("... Final Score: 3"): the expected score under the softmax restricted to the score tokens
  "1".."5", normalised to [0, 1] as (E - 1) / 4;
- pairwise ("Image 2 is better"): P(candidate) = the two-way softmax over the verdict tokens "1" / "2" after
  "Image ", with the reference as image 1 and the candidate as image 2 (as in compare(): P(candidate beats
  reference)).

The answer prefix ("Final Score: ", "Image ") is put into the assistant turn so the next token decides.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import torch

DEFAULT_JUDGE = "yes_no"

# UnifiedReward's image-generation prompts (CodeGoat24/UnifiedReward, inference_qwen/image_generation/
# qwen_point_score_image_generation.py and qwen_pair_rank_image_generation.py), reproduced as published; the
# "classic" prompts that UnifiedReward 1.0 and 2.0 (Qwen2.5-VL and Qwen3-VL) both answer.
UNIFIEDREWARD_POINTWISE = (
    "You are given a text caption and a generated image based on that caption. Your task is to evaluate this image "
    "based on two key criteria:\n"
    "1. Alignment with the Caption: Assess how well this image aligns with the provided caption. Consider the "
    "accuracy of depicted objects, their relationships, and attributes as described in the caption.\n"
    "2. Overall Image Quality: Examine the visual quality of this image, including clarity, detail preservation, "
    "color accuracy, and overall aesthetic appeal.\n"
    "Extract key elements from the provided text caption, evaluate their presence in the generated image using the "
    "format: 'element (type): value' (where value=0 means not generated, and value=1 means generated), and assign a "
    "score from 1 to 5 after 'Final Score:'.\n"
    "Your task is provided as follows:\n"
    "Text Caption: [{prompt}]"
)
UNIFIEDREWARD_PAIRWISE = (
    "You are given a text caption and two generated images based on that caption. Your task is to evaluate and "
    "compare these images based on two key criteria:\n"
    "1. Alignment with the Caption: Assess how well each image aligns with the provided caption. Consider the "
    "accuracy of depicted objects, their relationships, and attributes as described in the caption.\n"
    "2. Overall Image Quality: Examine the visual quality of each image, including clarity, detail preservation, "
    "color accuracy, and overall aesthetic appeal.\n"
    "Compare both images using the above criteria and select the one that better aligns with the caption while "
    "exhibiting superior visual quality.\n"
    'Provide a clear conclusion such as "Image 1 is better.", "Image 2 is better." and "Both images are equally '
    'good."\n'
    "Your task is provided as follows:\n"
    "Text Caption: [{prompt}]"
)


@dataclass(frozen=True)
class Judge:
    """A judge preset: its prompts (None: the project's own wording) and the tokens its answer is read from."""

    name: str
    summary: str
    pointwise: str | None = None  # user text after the image; {prompt} is filled in
    pairwise: str | None = None  # user text after image 1 (reference) and image 2 (candidate)
    pointwise_prefix: str = ""  # assistant text before the score token
    pairwise_prefix: str = ""  # assistant text before the verdict token
    score_tokens: tuple[str, ...] = ()  # pointwise answer tokens, lowest score first
    verdict_tokens: tuple[str, ...] = ()  # pairwise answer tokens: (reference wins, candidate wins)

    @property
    def own_wording(self) -> bool:
        """True for the project's yes/no prompts and P("yes") reading."""
        return self.pointwise is None


JUDGES: dict[str, Judge] = {
    j.name: j
    for j in (
        Judge(DEFAULT_JUDGE, 'the project\'s yes/no questions, read as P("yes")'),
        Judge(
            "unifiedreward",
            "UnifiedReward 1.0 / 2.0 (Qwen2.5-VL, Qwen3-VL): a 1-5 score and 'Image 1/2 is better', read as "
            "probabilities",
            pointwise=UNIFIEDREWARD_POINTWISE,
            pairwise=UNIFIEDREWARD_PAIRWISE,
            pointwise_prefix="Final Score: ",
            pairwise_prefix="Image ",
            score_tokens=("1", "2", "3", "4", "5"),
            verdict_tokens=("1", "2"),
        ),
    )
}


def judge_named(name: str) -> Judge:
    """The preset called `name` (ValueError naming the option and its choices otherwise)."""
    if name not in JUDGES:
        raise ValueError(f"judge must be one of {', '.join(JUDGES)}, got {name!r}")
    return JUDGES[name]


def single_token_id(tokenizer: Any, text: str, judge: str) -> int:
    """The one token id of `text`; a judge's answer tokens must each be one token in this tokenizer."""
    ids = tokenizer(text, add_special_tokens=False)["input_ids"]
    if len(ids) != 1:
        raise ValueError(
            f"judge {judge!r} reads the answer token {text!r}, which this tokenizer splits into {len(ids)} tokens; "
            "use judge 'yes_no' with this checkpoint"
        )
    return int(ids[0])


def answer_ids(tokenizer: Any, judge: Judge, pairwise: bool) -> tuple[int, ...]:
    """Token ids the score is read from, lowest value first (pointwise scores, or reference/candidate verdicts)."""
    texts = judge.verdict_tokens if pairwise else judge.score_tokens
    ids = tuple(single_token_id(tokenizer, t, judge.name) for t in texts)
    if len(set(ids)) != len(ids):
        raise ValueError(f"judge {judge.name!r}: the answer tokens {texts} share token ids in this tokenizer")
    return ids


def expected_value(logits: torch.Tensor, ids: Sequence[int]) -> torch.Tensor:
    """Expected rank of the answer under the softmax restricted to `ids` [N, V] -> [N], scaled to [0, 1]."""
    probs = logits.float()[:, list(ids)].softmax(dim=-1)
    values = torch.linspace(0.0, 1.0, len(ids), device=probs.device)
    return probs @ values


def judge_scores(logits: torch.Tensor, tokenizer: Any, judge: Judge, pairwise: Sequence[bool]) -> torch.Tensor:
    """[0, 1] scores of a text-answering judge from answer-position logits [N, V]; `pairwise` per row."""
    mask = torch.tensor(list(pairwise), dtype=torch.bool, device=logits.device)
    if len(mask) != logits.shape[0]:
        raise ValueError(f"got {len(mask)} pairwise flags for {logits.shape[0]} rows of logits")
    point = expected_value(logits, answer_ids(tokenizer, judge, pairwise=False)) if not mask.all() else None
    pair = expected_value(logits, answer_ids(tokenizer, judge, pairwise=True)) if mask.any() else None
    if point is None:
        return pair  # type: ignore[return-value]
    if pair is None:
        return point
    return torch.where(mask, pair, point)
