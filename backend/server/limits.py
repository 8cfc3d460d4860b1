"""How much text one scoring request may carry, checked before anything is tokenised (so one small body cannot
become a query of hundreds of thousands of tokens), and the token limit of one prepared query.

Every limit is named in its error (413 `too_long`); `max_query_tokens` is a server setting, the character limits
below are sized for real use (a prompt is a sentence or a paragraph; criteria are a few bullet points).
"""

from __future__ import annotations

from typing import Any

from ..scoring.prompts import CRITERIA_PRESETS
from .errors import ApiError

MAX_PROMPT_CHARS = 4000  # one generation prompt (also each few-shot example's prompt)
MAX_CRITERIA = 16  # criteria items per request (presets or free text)
MAX_CRITERION_CHARS = 1000  # one free-text criterion
MAX_TEMPLATE_CHARS = 4000  # question template, system prompt
MAX_WORD_CHARS = 32  # the answer and negative words
MAX_QUESTION_CHARS = 16000  # the question once {prompt} and {criteria} are filled in
PROMPT_FIELD, CRITERIA_FIELD = "{prompt}", "{criteria}"


def too_long(what: str, size: int, limit: int, unit: str = "characters") -> ApiError:
    """The 413 of a text over its limit, naming the limit."""
    return ApiError(413, "too_long", f"{what}: {size} {unit} is over the limit of {limit}; shorten it")


def check_length(text: Any, what: str, limit: int) -> None:
    """A string field within `limit` characters (other types are checked elsewhere)."""
    if isinstance(text, str) and len(text) > limit:
        raise too_long(what, len(text), limit)


def check_request_text(prompts: list[str], config: Any, few_shot_prompts: list[str]) -> None:
    """The prompts, criteria, templates and words of one request, and the question they expand to."""
    for i, prompt in enumerate(prompts):
        check_length(prompt, "prompt" if len(prompts) == 1 else f"prompt[{i}]", MAX_PROMPT_CHARS)
    for i, prompt in enumerate(few_shot_prompts):
        check_length(prompt, f"few_shot[{i}].prompt", MAX_PROMPT_CHARS)
    criteria = tuple(config.criteria or ())
    if len(criteria) > MAX_CRITERIA:
        raise too_long("criteria", len(criteria), MAX_CRITERIA, "items")
    for i, item in enumerate(criteria):
        check_length(item, f"criteria[{i}]", MAX_CRITERION_CHARS)
    check_length(config.question, "question", MAX_TEMPLATE_CHARS)
    check_length(config.system, "system", MAX_TEMPLATE_CHARS)
    check_length(config.answer, "answer", MAX_WORD_CHARS)
    check_length(config.negative, "negative", MAX_WORD_CHARS)
    if config.question:
        longest = max((len(p) for p in prompts + few_shot_prompts), default=0)
        size = expanded_length(config.question, longest, criteria_length(criteria))
        if size > MAX_QUESTION_CHARS:
            raise too_long("question (with {prompt} and {criteria} filled in)", size, MAX_QUESTION_CHARS)


def criteria_length(criteria: tuple[str, ...]) -> int:
    """Characters of the criteria bullet list (presets expanded), without building it."""
    return sum(len(CRITERIA_PRESETS.get(item, item)) + 3 for item in criteria)


def expanded_length(template: str, prompt_chars: int, criteria_chars: int) -> int:
    """Characters of `template` once every {prompt} and {criteria} is replaced, counted before replacing."""
    prompts, criteria = template.count(PROMPT_FIELD), template.count(CRITERIA_FIELD)
    return (
        len(template) + prompts * (prompt_chars - len(PROMPT_FIELD)) + criteria * (criteria_chars - len(CRITERIA_FIELD))
    )


def check_query_tokens(lengths: list[int], limit: int) -> None:
    """Every prepared query within `max_query_tokens` (checked after tokenising bounded text, before a forward)."""
    longest = max(lengths, default=0)
    if longest > limit:
        raise ApiError(
            413,
            "too_long",
            f"a query of this request is {longest} tokens, over max_query_tokens ({limit}); send smaller images "
            "(the pixel budget), fewer few-shot examples or shorter text, or raise the server's --max-query-tokens",
        )
