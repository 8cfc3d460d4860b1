"""Clients of `rewarddance serve`: `RewardClient` (sync) and `AsyncRewardClient`, mirroring `RewardModel`.

    from rewarddance.backend.client import RewardClient
    rm = RewardClient("http://127.0.0.1:8765", model="judge")      # token: argument or REWARDDANCE_TOKEN
    rm.score(["a.png", "b.png"], "a red fox").scores
    rm.compare(candidates, reference, "a red fox").scores
    rm.rank(images, "a red fox", top_k=2).indices
    rm.tournament(images, "a red fox").ranking

Inputs are what `RewardModel` takes: file paths (image files are sent as their own bytes, so the server
decodes exactly what a local run decodes), PIL images and `Image`s (sent as lossless PNG), ComfyUI IMAGE
tensors (sent as 8-bit PNG) and `Video`s (8-bit PNG frames + fps); see `client_encoding`. A 503 (queue full)
or a refused connection is retried with exponential backoff; other errors raise `BackendError` with the
server's message. Redirects are not followed (a 3xx is a `BackendError`), so the token stays with the URL.
Bodies, splitting, the token rule and answers are shared in `client_requests`.
"""

from __future__ import annotations

import asyncio
import json
import time
import urllib.error
import urllib.request
from collections.abc import Sequence
from typing import Any

from .client_encoding import encode_visual, encode_visuals
from .client_requests import DEFAULT_URL, RETRY_STATUSES, BackendError, RequestBuilder
from .scoring.results import RankResult, ScoreResult, TournamentResult

__all__ = ["AsyncRewardClient", "BackendError", "RewardClient", "encode_visual", "encode_visuals"]


class NoRedirects(urllib.request.HTTPRedirectHandler):
    """Leave 3xx answers to the caller (urllib would resend the Authorization header to the new URL)."""

    def redirect_request(self, req: Any, fp: Any, code: int, msg: str, headers: Any, newurl: str) -> None:
        """Follow nothing: urllib then raises the 3xx as an HTTPError."""
        return None


class RewardClient(RequestBuilder):
    """Synchronous client (standard library HTTP); safe to use from ComfyUI node threads.

    Options: url, token, model, timeout (s), retries, backoff (s), max_request_mb (larger calls are split).
    """

    _opener = urllib.request.build_opener(NoRedirects)

    def request(self, method: str, path: str, body: bytes | None = None) -> Any:
        """Send one request (retrying 503 and refused connections); the decoded JSON or text answer."""
        for attempt in range(self.retries + 1):
            req = urllib.request.Request(self.url + path, data=body, method=method, headers=self.headers())
            try:
                with self._opener.open(req, timeout=self.timeout) as resp:
                    raw = resp.read()
                    kind = resp.headers.get("Content-Type", "")
                    return json.loads(raw) if "json" in kind else raw.decode("utf-8")
            except urllib.error.HTTPError as exc:
                raw = exc.read()
                if 300 <= exc.code < 400:
                    raise self.redirected(path, exc.code, exc.headers.get("Location")) from None
                if exc.code in RETRY_STATUSES and attempt < self.retries:
                    time.sleep(self.delay(attempt, exc.headers.get("Retry-After")))
                    continue
                raise self.answer_error(exc.code, raw) from None
            except TimeoutError:
                raise self.timed_out(path) from None
            except (urllib.error.URLError, ConnectionError) as exc:
                if attempt < self.retries:
                    time.sleep(self.delay(attempt, None))
                    continue
                raise self.unreachable(getattr(exc, "reason", exc)) from None
        raise AssertionError("unreachable")

    def score(
        self,
        images: Any,
        prompt: str | Sequence[str],
        few_shot: Any = None,
        reasons: bool = False,
        model: str | None = None,
        **overrides: Any,
    ) -> ScoreResult:
        """Pointwise P("yes") per image, in input order (split into several requests when the body is large)."""
        bodies = self.score_bodies(images, prompt, few_shot, reasons, model, overrides)
        return self.merged_result([self.request("POST", "/v1/score", b) for b in bodies])

    def compare(
        self,
        candidates: Any,
        reference: Any,
        prompt: str | Sequence[str],
        few_shot: Any = None,
        reasons: bool = False,
        model: str | None = None,
        **overrides: Any,
    ) -> ScoreResult:
        """Pairwise P(candidate beats `reference`) per candidate (split into several requests when large)."""
        bodies = self.compare_bodies(candidates, reference, prompt, few_shot, reasons, model, overrides)
        return self.merged_result([self.request("POST", "/v1/compare", b) for b in bodies])

    def rank(
        self,
        images: Any,
        prompt: str | Sequence[str],
        top_k: int | None = None,
        few_shot: Any = None,
        model: str | None = None,
        **overrides: Any,
    ) -> RankResult:
        """Top-k indices by pointwise score."""
        return self.rank_result(
            self.request("POST", "/v1/rank", self.rank_body(images, prompt, top_k, few_shot, model, overrides))
        )

    def tournament(self, candidates: Any, prompt: str, model: str | None = None, **overrides: Any) -> TournamentResult:
        """Pairwise round robin among candidates."""
        return self.tournament_result(
            self.request("POST", "/v1/tournament", self.tournament_body(candidates, prompt, model, overrides))
        )

    def models(self) -> dict:
        """GET /v1/models."""
        return self.request("GET", "/v1/models")

    def load(self, name: str) -> dict:
        """Load a configured model on the server."""
        return self.request("POST", f"/v1/models/{name}/load", b"")

    def unload(self, name: str) -> dict:
        """Free a model on the server."""
        return self.request("POST", f"/v1/models/{name}/unload", b"")

    def health(self) -> dict:
        """GET /health."""
        return self.request("GET", "/health")

    def ready(self) -> bool:
        """True when the server's default model is loaded."""
        try:
            self.request("GET", "/ready")
            return True
        except BackendError as exc:
            if exc.status == 503:
                return False
            raise


class AsyncRewardClient(RequestBuilder):
    """asyncio client (aiohttp); use `async with AsyncRewardClient(url) as rm:` or call `close()`.

    Options as `RewardClient`'s, plus `connections`: the most open connections at once.
    """

    def __init__(
        self,
        url: str = DEFAULT_URL,
        token: str | None = None,
        model: str | None = None,
        timeout: float = 600.0,
        retries: int = 5,
        backoff: float = 0.25,
        connections: int = 64,
        max_request_mb: float = 48.0,
    ):
        super().__init__(url, token, model, timeout, retries, backoff, max_request_mb)
        self.connections = connections
        self._session: Any = None

    async def __aenter__(self) -> AsyncRewardClient:
        return self

    async def __aexit__(self, *exc: Any) -> None:
        await self.close()

    async def close(self) -> None:
        """Close the HTTP session."""
        if self._session is not None:
            await self._session.close()
            self._session = None

    def _get_session(self) -> Any:
        import aiohttp

        if self._session is None:
            self._session = aiohttp.ClientSession(
                timeout=aiohttp.ClientTimeout(total=self.timeout),
                connector=aiohttp.TCPConnector(limit=self.connections),
            )
        return self._session

    async def request(self, method: str, path: str, body: bytes | None = None) -> Any:
        """Send one request (retrying 503 and refused connections); the decoded JSON or text answer."""
        import aiohttp

        session = self._get_session()
        for attempt in range(self.retries + 1):
            try:
                async with session.request(
                    method, self.url + path, data=body, headers=self.headers(), allow_redirects=False
                ) as resp:
                    raw = await resp.read()
                    if 300 <= resp.status < 400:
                        raise self.redirected(path, resp.status, resp.headers.get("Location"))
                    if resp.status in RETRY_STATUSES and attempt < self.retries:
                        await asyncio.sleep(self.delay(attempt, resp.headers.get("Retry-After")))
                        continue
                    if resp.status >= 400:
                        raise self.answer_error(resp.status, raw)
                    return json.loads(raw) if "json" in resp.content_type else raw.decode("utf-8")
            except asyncio.TimeoutError:
                raise self.timed_out(path) from None
            except aiohttp.ClientConnectionError as exc:
                if attempt < self.retries:
                    await asyncio.sleep(self.delay(attempt, None))
                    continue
                raise self.unreachable(exc) from None
        raise AssertionError("unreachable")

    async def score(
        self,
        images: Any,
        prompt: str | Sequence[str],
        few_shot: Any = None,
        reasons: bool = False,
        model: str | None = None,
        **overrides: Any,
    ) -> ScoreResult:
        """Pointwise P("yes") per image, in input order (large calls go as several concurrent requests)."""
        bodies = self.score_bodies(images, prompt, few_shot, reasons, model, overrides)
        return self.merged_result(list(await asyncio.gather(*(self.request("POST", "/v1/score", b) for b in bodies))))

    async def compare(
        self,
        candidates: Any,
        reference: Any,
        prompt: str | Sequence[str],
        few_shot: Any = None,
        reasons: bool = False,
        model: str | None = None,
        **overrides: Any,
    ) -> ScoreResult:
        """Pairwise P(candidate beats `reference`) per candidate (large calls go as several concurrent requests)."""
        bodies = self.compare_bodies(candidates, reference, prompt, few_shot, reasons, model, overrides)
        return self.merged_result(list(await asyncio.gather(*(self.request("POST", "/v1/compare", b) for b in bodies))))

    async def rank(
        self,
        images: Any,
        prompt: str | Sequence[str],
        top_k: int | None = None,
        few_shot: Any = None,
        model: str | None = None,
        **overrides: Any,
    ) -> RankResult:
        """Top-k indices by pointwise score."""
        body = self.rank_body(images, prompt, top_k, few_shot, model, overrides)
        return self.rank_result(await self.request("POST", "/v1/rank", body))

    async def tournament(
        self, candidates: Any, prompt: str, model: str | None = None, **overrides: Any
    ) -> TournamentResult:
        """Pairwise round robin among candidates."""
        body = self.tournament_body(candidates, prompt, model, overrides)
        return self.tournament_result(await self.request("POST", "/v1/tournament", body))

    async def models(self) -> dict:
        """GET /v1/models."""
        return await self.request("GET", "/v1/models")

    async def health(self) -> dict:
        """GET /health."""
        return await self.request("GET", "/health")
