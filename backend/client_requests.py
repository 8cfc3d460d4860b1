"""What the sync and async clients share: `BackendError`, request bodies (split under the size limit), answers.

The token: the one passed in is sent to that URL as given; without one, $REWARDDANCE_TOKEN is sent only to
hosts $REWARDDANCE_TOKEN_HOSTS lists (default: loopback), so a URL typed into a workflow cannot collect it.
Neither client follows redirects (a redirect would carry the token elsewhere): a 3xx answer is an error.
Nothing here sends a request; `client.RewardClient` and `client.AsyncRewardClient` do, over their own HTTP stacks.
"""

from __future__ import annotations

import json
import os
from typing import Any
from urllib.parse import urlsplit

from .client_encoding import encode_visual, encode_visuals, few_shot_json, scoring_fields
from .config_files import TOKEN_ENV, TOKEN_HOSTS_ENV, env_token_for
from .scoring.results import RankResult, ScoreResult, TournamentResult

DEFAULT_URL = "http://127.0.0.1:8765"
RETRY_STATUSES = (503,)


class BackendError(RuntimeError):
    """The backend answered with an error (or could not be reached); `status` 0 means no answer.

    The one error class of the client layer: every failure of a request raises it.
    """

    def __init__(self, status: int, type: str, message: str):
        super().__init__(f"backend error {status} {type}: {message}" if status else f"backend unreachable: {message}")
        self.status = status
        self.type = type
        self.message = message


def backend_error(status: int, raw: bytes) -> BackendError:
    """The error of an HTTP error answer: the server's JSON error, or the start of whatever else came back."""
    try:
        err = json.loads(raw)["error"]
        return BackendError(status, str(err.get("type", "error")), str(err.get("message", "")))
    except (ValueError, KeyError, TypeError, AttributeError):
        return BackendError(status, "http_error", raw[:200].decode("utf-8", "replace"))


class RequestBuilder:
    """Request bodies and response parsing shared by the sync and async clients."""

    differentiable = False  # scores come back as numbers: no gradient reaches the generator (unlike RewardModel)

    def __init__(
        self,
        url: str = DEFAULT_URL,
        token: str | None = None,
        model: str | None = None,
        timeout: float = 600.0,
        retries: int = 5,
        backoff: float = 0.25,
        max_request_mb: float = 48.0,
    ):
        if not isinstance(url, str) or not url.startswith(("http://", "https://")):
            raise ValueError(f"url must start with http:// or https://, got {url!r}")
        if retries < 0 or timeout <= 0 or backoff < 0:
            raise ValueError("retries and backoff must be >= 0 and timeout > 0")
        self.url = url.rstrip("/")
        self.token = token if token is not None else env_token_for(self.url)
        self.token_withheld = token is None and self.token is None and bool(os.environ.get(TOKEN_ENV))
        self.model = model
        self.timeout = timeout
        self.retries = retries
        self.backoff = backoff
        self.max_request_bytes = int(max_request_mb * 2**20)  # larger score/compare calls are split (server: 64 MB)
        self.last_usage: dict[str, Any] = {}

    def headers(self) -> dict[str, str]:
        """JSON content type and, when a token is set, the bearer header."""
        h = {"Content-Type": "application/json"}
        if self.token:
            h["Authorization"] = f"Bearer {self.token}"
        return h

    def body(self, model: str | None, **fields: Any) -> bytes:
        """A JSON body of the fields that are set, naming the model (this call's, else the client's)."""
        fields = {k: v for k, v in fields.items() if v is not None}
        if (model or self.model) is not None:
            fields["model"] = model or self.model
        return json.dumps(fields).encode()

    def chunks(self, visuals: list, prompt: Any) -> list[tuple[list, Any]]:
        """Split encoded visuals (and per-item prompts) into groups whose bodies stay under the size limit."""
        groups, start, size = [], 0, 0
        for i, v in enumerate(visuals):
            item = len(v) if isinstance(v, str) else sum(len(f) for f in v["frames"])
            if i > start and size + item > self.max_request_bytes:
                groups.append((start, i))
                start, size = i, 0
            size += item
        groups.append((start, len(visuals)))
        per_item = isinstance(prompt, (list, tuple))
        return [(visuals[a:b], list(prompt[a:b]) if per_item else prompt) for a, b in groups]

    def score_bodies(
        self, images: Any, prompt: Any, few_shot: Any, reasons: bool, model: str | None, overrides: dict
    ) -> list[bytes]:
        """The /v1/score bodies of one call."""
        shots = few_shot_json(few_shot, False)
        return [
            self.body(model, images=part, few_shot=shots, reasons=reasons or None, **scoring_fields(p, overrides))
            for part, p in self.chunks(encode_visuals(images), prompt)
        ]

    def compare_bodies(
        self,
        candidates: Any,
        reference: Any,
        prompt: Any,
        few_shot: Any,
        reasons: bool,
        model: str | None,
        overrides: dict,
    ) -> list[bytes]:
        """The /v1/compare bodies of one call (each carries the reference)."""
        ref, shots = encode_visual(reference, "reference"), few_shot_json(few_shot, True)
        return [
            self.body(
                model,
                candidates=part,
                reference=ref,
                few_shot=shots,
                reasons=reasons or None,
                **scoring_fields(p, overrides),
            )
            for part, p in self.chunks(encode_visuals(candidates, "candidates"), prompt)
        ]

    def merged_result(self, answers: list[dict]) -> ScoreResult:
        """One ScoreResult from the answers of a split call, in input order."""
        scores = [s for a in answers for s in a["scores"]]
        reasons = [r for a in answers for r in a["reasons"]] if all("reasons" in a for a in answers) else None
        spread = [s for a in answers for s in a["spread"]] if all("spread" in a for a in answers) else None
        self.last_usage = (
            answers[-1].get("usage", {})
            if len(answers) == 1
            else {"requests": len(answers), "queries": sum(a.get("usage", {}).get("queries", 0) for a in answers)}
        )
        return ScoreResult(scores, reasons, spread)

    def rank_body(
        self, images: Any, prompt: Any, top_k: int | None, few_shot: Any, model: str | None, overrides: dict
    ) -> bytes:
        """The /v1/rank body."""
        return self.body(
            model,
            images=encode_visuals(images),
            top_k=top_k,
            few_shot=few_shot_json(few_shot, False),
            **scoring_fields(prompt, overrides),
        )

    def tournament_body(self, candidates: Any, prompt: str, model: str | None, overrides: dict) -> bytes:
        """The /v1/tournament body."""
        return self.body(
            model, candidates=encode_visuals(candidates, "candidates"), **scoring_fields(prompt, overrides)
        )

    def rank_result(self, data: dict) -> RankResult:
        """A RankResult from the /v1/rank answer."""
        self.last_usage = data.get("usage", {})
        return RankResult(data["indices"], data["scores"], data["all_scores"])

    def tournament_result(self, data: dict) -> TournamentResult:
        """A TournamentResult from the /v1/tournament answer."""
        self.last_usage = data.get("usage", {})
        return TournamentResult(data["wins"], data["mean_win_probability"], data["ranking"], data["matrix"])

    def answer_error(self, status: int, raw: bytes) -> BackendError:
        """The error of an HTTP error answer, with a hint when a 401 may be the withheld environment token."""
        err = backend_error(status, raw)
        if status == 401 and self.token_withheld:
            host = urlsplit(self.url).netloc
            err = BackendError(
                status,
                err.type,
                f"{err.message} ({TOKEN_ENV} is set but is not sent to {host}: add {host} to {TOKEN_HOSTS_ENV}, "
                "or pass the token to the client explicitly)",
            )
        return err

    def redirected(self, path: str, status: int, location: str | None) -> BackendError:
        """The error for a 3xx answer: redirects are not followed, so the token never travels to another URL."""
        return BackendError(
            status,
            "redirect",
            f"{self.url}{path} redirects to {location or '(no Location)'}; the client does not follow redirects "
            "(they would carry the token elsewhere): use the final URL as the backend URL",
        )

    def delay(self, attempt: int, retry_after: str | None) -> float:
        """Seconds before retry `attempt` (Retry-After when the server gives one)."""
        try:
            hinted = float(retry_after) if retry_after else 0.0
        except ValueError:
            hinted = 0.0
        return max(hinted, self.backoff * (2**attempt))

    def timed_out(self, path: str) -> BackendError:
        """The error for a request that got no answer within the timeout."""
        return BackendError(
            0,
            "timeout",
            f"{self.url}{path}: no answer within {self.timeout:g} s; raise the client timeout or send fewer images",
        )

    def unreachable(self, reason: Any) -> BackendError:
        """The error for a server that refused every connection attempt."""
        return BackendError(0, "unreachable", f"{self.url}: {reason}; is `rewarddance serve` running there?")
