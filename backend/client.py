"""Clients of `rewarddance serve`: `RewardClient` (sync) and `AsyncRewardClient`, mirroring `RewardModel`.

    from rewarddance.backend.client import RewardClient
    rm = RewardClient("http://127.0.0.1:8765", model="judge")      # token: argument or REWARDDANCE_TOKEN
    rm.score(["a.png", "b.png"], "a red fox").scores
    rm.compare(candidates, reference, "a red fox").scores
    rm.rank(images, "a red fox", top_k=2).indices
    rm.tournament(images, "a red fox").ranking

Inputs are what `RewardModel` takes: file paths (image files are sent as their own bytes, so the server
decodes exactly what a local run decodes), PIL images and `Image`s (sent as lossless PNG), ComfyUI IMAGE
tensors (sent as 8-bit PNG) and `Video`s (8-bit PNG frames + fps). A 503 (queue full) or a refused
connection is retried with exponential backoff; other errors raise `BackendError` with the server's message.
"""

from __future__ import annotations

import asyncio
import base64
import io
import json
import os
import time
import urllib.error
import urllib.request
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from PIL import Image as PILImage

from .config_files import TOKEN_ENV
from .media import (
    Image,
    MediaError,
    Video,
    images_from_batch,
    is_video_path,
    load_image_file,
    load_video_file,
    pil_to_rgb,
)
from .scoring.results import RankResult, ScoreResult, TournamentResult

RAW_IMAGE_SUFFIXES = {".png", ".jpg", ".jpeg", ".webp"}
RETRY_STATUSES = (503,)


class BackendError(RuntimeError):
    """The backend answered with an error (or could not be reached); `status` 0 means no answer."""

    def __init__(self, status: int, type: str, message: str):
        super().__init__(f"backend error {status} {type}: {message}" if status else f"backend unreachable: {message}")
        self.status = status
        self.type = type
        self.message = message


# --- encoding inputs ---------------------------------------------------------------------------------------------
def _b64(data: bytes) -> str:
    return base64.b64encode(data).decode("ascii")


def _png(img: PILImage.Image) -> str:
    buf = io.BytesIO()
    img.save(buf, format="PNG", compress_level=1)
    return _b64(buf.getvalue())


def _tensor_png(t: torch.Tensor) -> str:
    """An [H, W, 3] float tensor in [0, 1] as 8-bit PNG."""
    arr = (t.detach().float().clamp(0, 1) * 255.0).round().to(torch.uint8).cpu().numpy()
    return _png(PILImage.fromarray(np.ascontiguousarray(arr)))


def encode_visual(item: Any, where: str = "image") -> str | dict:
    """One input as the API's JSON: a base64 image string or a video object."""
    if isinstance(item, (str, os.PathLike)):
        path = Path(item)
        if is_video_path(path):
            return encode_visual(load_video_file(path), where)
        if path.suffix.lower() in RAW_IMAGE_SUFFIXES and path.is_file():
            return _b64(path.read_bytes())
        return encode_visual(load_image_file(path), where)
    if isinstance(item, Video):
        return {"frames": [_tensor_png(f) for f in item.frames], "fps": item.fps}
    if isinstance(item, Image):
        return _png(item.pil) if item.pil is not None else _tensor_png(item.tensor[..., :3])
    if isinstance(item, PILImage.Image):
        return _png(pil_to_rgb(item, where))
    if isinstance(item, torch.Tensor):
        if item.ndim == 4 and item.shape[0] == 1:
            item = item[0]
        return encode_visual(images_from_batch(item, where)[0], where)
    raise MediaError(
        f"{where}: unsupported input type {type(item).__name__}; pass a path, a PIL image, an IMAGE tensor or a Video"
    )


def encode_visuals(items: Any, name: str = "images") -> list[str | dict]:
    """A batch input (list, or an IMAGE tensor [B, H, W, C]) as a list of API visuals."""
    if isinstance(items, torch.Tensor) and items.ndim == 4:
        return [encode_visual(img, f"{name}[{i}]") for i, img in enumerate(images_from_batch(items, name))]
    if isinstance(items, (str, os.PathLike, Image, Video, PILImage.Image, torch.Tensor)):
        items = [items]
    if not isinstance(items, Sequence) or not items:
        raise MediaError(f"{name}: expected a non-empty list of images")
    return [encode_visual(item, f"{name}[{i}]") for i, item in enumerate(items)]


def _scoring_fields(prompt: Any, overrides: dict[str, Any]) -> dict[str, Any]:
    body = {"prompt": list(prompt) if isinstance(prompt, (list, tuple)) else prompt}
    for key, value in overrides.items():
        if value is not None:
            body[key] = list(value) if isinstance(value, tuple) else value
    return body


def _few_shot(examples: Any, pairwise: bool) -> list[dict] | None:
    if not examples:
        return None
    out = []
    for i, ex in enumerate(examples):
        row = {"image": encode_visual(ex.visual, f"few_shot[{i}]"), "verdict": bool(ex.verdict)}
        if ex.prompt:
            row["prompt"] = ex.prompt
        if pairwise and ex.reference is not None:
            row["reference"] = encode_visual(ex.reference, f"few_shot[{i}].reference")
        out.append(row)
    return out


class _Requests:
    """Request bodies and response parsing shared by the sync and async clients."""

    def __init__(
        self,
        url: str,
        token: str | None,
        model: str | None,
        timeout: float,
        retries: int,
        backoff: float,
        max_request_mb: float = 48.0,
    ):
        if not isinstance(url, str) or not url.startswith(("http://", "https://")):
            raise ValueError(f"url must start with http:// or https://, got {url!r}")
        if retries < 0 or timeout <= 0 or backoff < 0:
            raise ValueError("retries and backoff must be >= 0 and timeout > 0")
        self.url = url.rstrip("/")
        self.token = token if token is not None else os.environ.get(TOKEN_ENV)
        self.model = model
        self.timeout = timeout
        self.retries = retries
        self.backoff = backoff
        self.max_request_bytes = int(
            max_request_mb * 2**20
        )  # larger score/compare calls are split (server default 64 MB)
        self.last_usage: dict[str, Any] = {}

    def headers(self) -> dict[str, str]:
        h = {"Content-Type": "application/json"}
        if self.token:
            h["Authorization"] = f"Bearer {self.token}"
        return h

    def body(self, model: str | None, **fields: Any) -> bytes:
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
        shots = _few_shot(few_shot, False)
        return [
            self.body(model, images=part, few_shot=shots, reasons=reasons or None, **_scoring_fields(p, overrides))
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
        ref, shots = encode_visual(reference, "reference"), _few_shot(few_shot, True)
        return [
            self.body(
                model,
                candidates=part,
                reference=ref,
                few_shot=shots,
                reasons=reasons or None,
                **_scoring_fields(p, overrides),
            )
            for part, p in self.chunks(encode_visuals(candidates, "candidates"), prompt)
        ]

    def merged_result(self, answers: list[dict]) -> ScoreResult:
        """One ScoreResult from the answers of a split call, in input order."""
        scores = [s for a in answers for s in a["scores"]]
        reasons = [r for a in answers for r in a["reasons"]] if all("reasons" in a for a in answers) else None
        self.last_usage = (
            answers[-1].get("usage", {})
            if len(answers) == 1
            else {"requests": len(answers), "queries": sum(a.get("usage", {}).get("queries", 0) for a in answers)}
        )
        return ScoreResult(scores, reasons)

    def rank_body(
        self, images: Any, prompt: Any, top_k: int | None, few_shot: Any, model: str | None, overrides: dict
    ) -> bytes:
        return self.body(
            model,
            images=encode_visuals(images),
            top_k=top_k,
            few_shot=_few_shot(few_shot, False),
            **_scoring_fields(prompt, overrides),
        )

    def tournament_body(self, candidates: Any, prompt: str, model: str | None, overrides: dict) -> bytes:
        return self.body(
            model, candidates=encode_visuals(candidates, "candidates"), **_scoring_fields(prompt, overrides)
        )

    def rank_result(self, data: dict) -> RankResult:
        self.last_usage = data.get("usage", {})
        return RankResult(data["indices"], data["scores"], data["all_scores"])

    def tournament_result(self, data: dict) -> TournamentResult:
        self.last_usage = data.get("usage", {})
        return TournamentResult(data["wins"], data["mean_win_probability"], data["ranking"], data["matrix"])

    def delay(self, attempt: int, retry_after: str | None) -> float:
        """Seconds before retry `attempt` (Retry-After when the server gives one)."""
        try:
            hinted = float(retry_after) if retry_after else 0.0
        except ValueError:
            hinted = 0.0
        return max(hinted, self.backoff * (2**attempt))


def _error(status: int, raw: bytes) -> BackendError:
    try:
        err = json.loads(raw)["error"]
        return BackendError(status, str(err.get("type", "error")), str(err.get("message", "")))
    except (ValueError, KeyError, TypeError, AttributeError):
        return BackendError(status, "http_error", raw[:200].decode("utf-8", "replace"))


class RewardClient(_Requests):
    """Synchronous client (standard library HTTP); safe to use from ComfyUI node threads."""

    def __init__(
        self,
        url: str = "http://127.0.0.1:8765",
        token: str | None = None,
        model: str | None = None,
        timeout: float = 600.0,
        retries: int = 5,
        backoff: float = 0.25,
        max_request_mb: float = 48.0,
    ):
        super().__init__(url, token, model, timeout, retries, backoff, max_request_mb)

    def request(self, method: str, path: str, body: bytes | None = None) -> Any:
        """Send one request (retrying 503 and refused connections); the decoded JSON or text answer."""
        for attempt in range(self.retries + 1):
            req = urllib.request.Request(self.url + path, data=body, method=method, headers=self.headers())
            try:
                with urllib.request.urlopen(req, timeout=self.timeout) as resp:
                    raw = resp.read()
                    kind = resp.headers.get("Content-Type", "")
                    return json.loads(raw) if "json" in kind else raw.decode("utf-8")
            except urllib.error.HTTPError as exc:
                raw = exc.read()
                if exc.code in RETRY_STATUSES and attempt < self.retries:
                    time.sleep(self.delay(attempt, exc.headers.get("Retry-After")))
                    continue
                raise _error(exc.code, raw) from None
            except TimeoutError:
                raise BackendError(
                    0,
                    "timeout",
                    f"{self.url}{path}: no answer within {self.timeout:g} s; raise the "
                    "client timeout or send fewer images",
                ) from None
            except (urllib.error.URLError, ConnectionError) as exc:
                if attempt < self.retries:
                    time.sleep(self.delay(attempt, None))
                    continue
                raise BackendError(
                    0,
                    "unreachable",
                    f"{self.url}: {getattr(exc, 'reason', exc)}; is `rewarddance serve` running there?",
                ) from None
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


class AsyncRewardClient(_Requests):
    """asyncio client (aiohttp); use `async with AsyncRewardClient(url) as rm:` or call `close()`."""

    def __init__(
        self,
        url: str = "http://127.0.0.1:8765",
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
                async with session.request(method, self.url + path, data=body, headers=self.headers()) as resp:
                    raw = await resp.read()
                    if resp.status in RETRY_STATUSES and attempt < self.retries:
                        await asyncio.sleep(self.delay(attempt, resp.headers.get("Retry-After")))
                        continue
                    if resp.status >= 400:
                        raise _error(resp.status, raw)
                    return json.loads(raw) if "json" in resp.content_type else raw.decode("utf-8")
            except asyncio.TimeoutError:
                raise BackendError(
                    0,
                    "timeout",
                    f"{self.url}{path}: no answer within {self.timeout:g} s; raise the "
                    "client timeout or send fewer images",
                ) from None
            except aiohttp.ClientConnectionError as exc:
                if attempt < self.retries:
                    await asyncio.sleep(self.delay(attempt, None))
                    continue
                raise BackendError(
                    0, "unreachable", f"{self.url}: {exc}; is `rewarddance serve` running there?"
                ) from None
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
