"""Plain result types returned by scoring and ranking operations."""

from __future__ import annotations

from dataclasses import asdict, dataclass


@dataclass
class ScoreResult:
    """Scores in input order, and generated reasons when they were asked for."""

    scores: list[float]
    reasons: list[str] | None = None

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
