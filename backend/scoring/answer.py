"""Where the yes/no token ids are chosen, and how logits become P("yes")."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch

from .config import ScoringConfig


def word_variants(word: str) -> list[str]:
    """Case and leading-space variants of an answer word: Yes, yes, YES, ' Yes', ' yes', ' YES'."""
    base = word.strip()
    forms = [base, base.lower(), base.capitalize(), base.upper()]
    return list(dict.fromkeys(forms + [" " + f for f in forms]))


def first_token_id(tokenizer: Any, text: str) -> int:
    """The first token id the tokenizer produces for `text` (no special tokens)."""
    ids = tokenizer(text, add_special_tokens=False)["input_ids"]
    if not ids:
        raise ValueError(f"the tokenizer turns the answer word {text!r} into no tokens; choose another word")
    return int(ids[0])


@dataclass(frozen=True)
class AnswerTokens:
    """Token ids whose probabilities count as "yes" and as "no"."""

    yes_ids: tuple[int, ...]
    no_ids: tuple[int, ...]

    @classmethod
    def from_config(cls, tokenizer: Any, config: ScoringConfig, with_space: bool = False) -> AnswerTokens:
        """Ids of the answer word's first token (and of its variants when `answer_variants` is on)."""

        def ids_for(word: str) -> tuple[int, ...]:
            forms = word_variants(word) if config.answer_variants else [word.strip()]
            if with_space and not config.answer_variants:
                forms = forms + [" " + word.strip()]
            return tuple(dict.fromkeys(first_token_id(tokenizer, f) for f in forms))

        yes, no = ids_for(config.answer), ids_for(config.negative_word)
        overlap = set(yes) & set(no)
        if overlap:
            raise ValueError(
                f"answer {config.answer!r} and negative {config.negative_word!r} share first token(s) {sorted(overlap)}; "
                "choose words that start differently"
            )
        return cls(yes, no)


def yes_probability(logits: torch.Tensor, tokens: AnswerTokens, normalize: str) -> torch.Tensor:
    """P("yes") from last-position logits [N, V]: full-vocabulary softmax or the two-way yes/no softmax."""
    logits = logits.float()
    yes = torch.logsumexp(logits[:, list(tokens.yes_ids)], dim=-1)
    if normalize == "vocab":
        return torch.exp(yes - torch.logsumexp(logits, dim=-1))
    no = torch.logsumexp(logits[:, list(tokens.no_ids)], dim=-1)
    return torch.sigmoid(yes - no)
