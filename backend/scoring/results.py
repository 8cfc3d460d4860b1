"""Plain result types returned by scoring and ranking operations."""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any, NamedTuple


class Judgements(NamedTuple):
    """What the engine's `RewardModel.run` returns for a list of queries.

    `scores` [N] (a tensor; with samples=k the mean P(yes) over a query's k judgements), `reasons` (one text per
    query, the first judgement's when k > 1; None when none were generated) and `spread` [N] (the population
    standard deviation of the k judgements' P(yes); None when samples is 1)."""

    scores: Any
    reasons: list[str] | None = None
    spread: Any = None


@dataclass
class ScoreResult:
    """Scores in input order, generated reasons when they were asked for, and with samples=k the spread.

    With samples=k a score is the mean P(yes) of k sampled reasoning-first judgements, `spread` their standard
    deviation (population), and `reasons` the first judgement's text per input."""

    scores: list[float]
    reasons: list[str] | None = None
    spread: list[float] | None = None

    def to_dict(self) -> dict:
        return asdict(self)


@dataclass
class RankResult:
    """Top-k by score: `indices` into the input, their `scores`, and every input's score."""

    indices: list[int]
    scores: list[float]
    all_scores: list[float]
    reasons: list[str] | None = None

    def to_dict(self) -> dict:
        return asdict(self)


@dataclass
class TournamentResult:
    """Pairwise round robin: wins per candidate, mean P(beats opponent), ranking, and the full matrix.

    `matrix[i][j]` is P(candidate j beats reference i); the diagonal is 0.5 by convention.
    """

    wins: list[int]
    mean_win_probability: list[float]
    ranking: list[int]
    matrix: list[list[float]]

    def to_dict(self) -> dict:
        return asdict(self)
