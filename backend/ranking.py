"""The one ranking order (best first, ties to the lower index), the checks on how many items a ranking or a
tournament takes, and win rates read from a tournament; scoring results, ComfyUI selection, node summaries and
the group rewards all use them."""

from __future__ import annotations

from collections.abc import Sequence

MIN_TOURNAMENT = 2  # a round robin needs someone to play against


def ranking_order(scores: Sequence[float]) -> list[int]:
    """Indices from the highest score to the lowest (ties: lower index first)."""
    return sorted(range(len(scores)), key=lambda i: (-scores[i], i))


def check_top_k(top_k: int | None, n: int) -> int:
    """How many of `n` items to keep: a positive integer capped at n (None = all); ValueError otherwise."""
    if top_k is None:
        return n
    if isinstance(top_k, bool) or not isinstance(top_k, int) or top_k < 1:
        raise ValueError(f"top_k must be a positive integer, got {top_k!r}")
    return min(top_k, n)


def check_tournament_size(n: int, name: str = "candidates") -> None:
    """A tournament needs at least two entrants; the message names the input `name`."""
    if n < MIN_TOURNAMENT:
        raise ValueError(f"{name}: a tournament needs at least {MIN_TOURNAMENT} candidates, got {n}")


def symmetric_win_rates(matrix: Sequence[Sequence[float]]) -> tuple[list[float], list[float]]:
    """(mean win probability, fraction of wins) per entrant of a round robin, both orders of each pair averaged.

    `matrix[i][j]` is P(j beats reference i) (`TournamentResult.matrix`). j's win probability against i is the
    mean of P(j beats i) and 1 - P(i beats j), so a judge's bias for one position cancels and the mean win
    probabilities of a group always average 0.5; a tie (0.5) counts half a win."""
    n = len(matrix)
    if n < MIN_TOURNAMENT:
        return [0.5] * n, [0.5] * n
    p = [[0.5 * (matrix[i][j] + 1.0 - matrix[j][i]) for j in range(n)] for i in range(n)]
    others = [[i for i in range(n) if i != j] for j in range(n)]
    soft = [sum(p[i][j] for i in others[j]) / (n - 1) for j in range(n)]
    hard = [
        sum(1.0 if p[i][j] > 0.5 else 0.5 if p[i][j] == 0.5 else 0.0 for i in others[j]) / (n - 1) for j in range(n)
    ]
    return soft, hard
