"""The HTTP API: a route table over a `ScoringService`, served alone or mounted on another aiohttp app.

    POST /v1/score        {"model"?, "prompt", "images": [b64...], criteria/question/system/normalize/answer/...}
    POST /v1/compare      {"prompt", "candidates": [...], "reference": b64}   P(candidate beats reference)
    POST /v1/rank         {"prompt", "images": [...], "top_k"?}
    POST /v1/tournament   {"prompt", "candidates": [...]}                     pairwise round robin
    GET  /v1/models       POST /v1/models/{name}/load   POST /v1/models/{name}/unload
    GET  /health          GET /ready          GET /metrics          GET /openapi.json

Errors are `{"error": {"type", "message"}}` with a 4xx/5xx status; never a stack trace. When a bearer
token is configured every route but /health and /ready requires `Authorization: Bearer <token>`.
Every route refuses cross-origin browser requests and unlisted Host names (403) and POST bodies that are
not JSON or multipart (415) unless the operator allowed them (`origin.BrowserPolicy`); OPTIONS answers
CORS preflights of allowed origins. Mounted in another server (`mount`), the Host check is the host's, and
`require_token_for_heavy` makes the POST routes need the token (403 while none is configured).
"""

from __future__ import annotations

import asyncio
import hmac
import logging
import time
from collections.abc import Awaitable, Callable, Iterable
from dataclasses import dataclass
from typing import Any

from aiohttp import web

from ..config_files import TOKEN_ENV
from ..media import MediaError
from ..reward_model import compare_queries, rank_result, score_queries, tournament_queries, tournament_result
from .body import read_payload
from .decoding import UNLOADED_KEEP_PIXELS, KeptSize, VisualDecoder
from .errors import ApiError, bad_request
from .limits import check_request_text
from .manager import ModelManager
from .metrics import Metrics
from .openapi import openapi_spec
from .origin import BrowserPolicy, check_browser, cors_headers, preflight
from .protocol import parse_request
from .schema import ENDPOINTS, OPEN_ROUTES, ROUTES
from .settings import ServerSettings

log = logging.getLogger("rewarddance.server")
Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]
HEAVY_ROUTES = frozenset(r.name for r in ROUTES if r.method == "POST")  # scoring, load, unload


@dataclass(frozen=True)
class Access:
    """How one set of routes is guarded: the browser policy and which routes check the bearer token."""

    policy: BrowserPolicy
    token_routes: frozenset[str]  # the routes that check the token
    token_required: bool = False  # True: those routes answer 403 while no token is configured


class ScoringService:
    """Everything the routes share: settings, metrics, the model manager and the image decoder."""

    def __init__(self, settings: ServerSettings, manager: ModelManager | None = None):
        self.settings = settings.validate(require_models=False)
        self.metrics = Metrics()
        self.manager = manager or ModelManager(settings, self.metrics)
        self.manager.metrics = self.metrics
        self.metrics.watch_models(lambda: {name: entry.model for name, entry in self.manager.loaded.items()})
        self.decoder = VisualDecoder(
            settings.max_image_pixels,
            max_request_pixels=settings.max_request_pixels,
            max_inflight_pixels=settings.max_inflight_pixels,
        )
        self.started = time.time()

    async def startup(self) -> None:
        """Load the models configured with preload."""
        await self.manager.preload()

    def abort(self) -> None:
        """Stop scoring now (shutdown past its grace): running batches end at the next forward, queued ones 503."""
        for entry in list(self.manager.loaded.values()):
            entry.batcher.abort()

    async def shutdown(self) -> None:
        """Finish queued work and stop the batchers."""
        await self.manager.close()

    # --- the wrapper every route goes through ------------------------------------------------------------------
    def access(self) -> Access:
        """The guard of the standalone server: the configured browser policy; the token on all but open routes."""
        s = self.settings
        policy = BrowserPolicy.build(s.allow_origins, s.allow_hosts, s.host)
        return Access(policy, frozenset(r.name for r in ROUTES if r.name not in OPEN_ROUTES))

    def route(self, name: str, fn: Handler, access: Access | None = None) -> Handler:
        """Browser checks, auth, JSON errors, metrics and latency around one route."""
        access = access or self.access()

        async def handler(request: web.Request) -> web.StreamResponse:
            started = time.perf_counter()
            status = 500
            try:
                check_browser(request, access.policy)
                if name in access.token_routes:
                    self.check_token(request, access.token_required)
                response = await fn(request)
                response.headers.update(cors_headers(request, access.policy))
                status = response.status
                return response
            except ApiError as exc:
                status = exc.status
                return self.error_response(exc)
            except asyncio.CancelledError:
                status = 499  # the client went away
                raise
            except web.HTTPException as exc:
                status = exc.status
                return self.error_response(ApiError(exc.status, "http_error", exc.reason))
            except Exception as exc:  # a bug: log it here, tell the client what failed without a stack trace
                log.exception("unhandled error in %s", name)
                return self.error_response(ApiError(500, "internal_error", f"{type(exc).__name__}: {exc}"))
            finally:
                self.metrics.requests.labels(name, str(status)).inc()
                self.metrics.latency.labels(name).observe(time.perf_counter() - started)

        handler.__name__ = f"rewarddance_{name}"
        return handler

    def error_response(self, exc: ApiError) -> web.Response:
        """The JSON body and headers of an error."""
        self.metrics.errors.labels(exc.type).inc()
        return web.json_response(exc.body(), status=exc.status, headers=exc.headers)

    def check_token(self, request: web.Request, required: bool = False) -> None:
        """401 unless the configured bearer token is presented; without a token a no-op, or 403 when `required`."""
        token = self.settings.token
        if not token and required:
            raise ApiError(
                403,
                "token_required",
                f"{request.method} {request.path} needs a bearer token because the server it is mounted on listens "
                f"beyond this machine, and none is configured; set the {TOKEN_ENV} environment variable for that "
                "server and send 'Authorization: Bearer <token>'",
            )
        if not token:
            return
        header = request.headers.get("Authorization", "")
        given = header[7:].strip() if header.lower().startswith("bearer ") else ""
        presented = given.encode("utf-8", "surrogateescape")  # raw non-UTF-8 header bytes are just a wrong token
        if not hmac.compare_digest(presented, token.encode()):
            raise ApiError(
                401,
                "unauthorized",
                "missing or wrong bearer token; send 'Authorization: Bearer <token>'",
                {"WWW-Authenticate": "Bearer"},
            )

    # --- scoring ---------------------------------------------------------------------------------------------------
    async def scoring(self, endpoint: str, request: web.Request) -> web.Response:
        """Shared body of /v1/score, /v1/compare, /v1/rank and /v1/tournament."""
        data = await read_payload(request, self.settings.max_body_bytes, self.settings.body_timeout_s)
        decoder = self.decoder.request(self.kept_size(data.get("model")))
        try:
            return await self._score(endpoint, request, data, decoder)
        finally:
            decoder.release()  # its decoded pixels leave the in-flight budget, whatever happened

    def kept_size(self, name: Any) -> KeptSize:
        """The size images of a request for model `name` are resized to once decoded.

        The loaded model's own processor rule; before it is loaded, its `max_pixels` setting or
        `UNLOADED_KEEP_PIXELS` with the aspect kept.
        """
        try:
            resolved = self.manager.resolve(name)
        except ApiError:  # reported by parse_request / manager.get as before
            return KeptSize("area", UNLOADED_KEEP_PIXELS)
        entry = self.manager.loaded.get(resolved)
        kept = KeptSize.of_model(entry.model) if entry is not None else None
        if kept is not None:
            return kept
        spec = self.settings.models.get(resolved)
        return KeptSize("area", spec.max_pixels if spec is not None and spec.max_pixels else UNLOADED_KEEP_PIXELS)

    async def _score(self, endpoint: str, request: web.Request, data: dict[str, Any], decoder: Any) -> web.Response:
        """Validate, queue and answer one scoring request decoded through `decoder`."""
        req = await asyncio.to_thread(parse_request, endpoint, data, decoder)
        entry = await self.manager.get(req.model)
        config = req.config(entry.model.config)
        prompts = [req.prompt] if isinstance(req.prompt, str) else list(req.prompt)
        check_request_text(prompts, config, [ex.prompt for ex in req.few_shot or [] if ex.prompt])
        try:
            entry.model.answer_tokens(config)  # answer words the tokenizer cannot tell apart fail here, not later
            queries, pairs = await asyncio.to_thread(build_queries, endpoint, req, config)
        except (MediaError, ValueError) as exc:
            raise bad_request(str(exc)) from exc
        alive = lambda: request.transport is not None and not request.transport.is_closing()  # noqa: E731
        entry, (scores, reasons, usage, spread) = await self.manager.submit(
            entry.name, queries, config, req.reasons, alive, self.settings.request_timeout_s
        )
        if endpoint == "rank":
            body: dict[str, Any] = rank_result(scores, req.top_k or len(scores)).to_dict()
            body.pop("reasons")
        elif endpoint == "tournament":
            body = tournament_result(pairs, scores).to_dict()
        else:
            body = {"scores": scores}
            if reasons is not None:
                body["reasons"] = reasons
            if spread is not None:
                body["spread"] = spread
        body.update(model=entry.name, usage=usage)
        return web.json_response(body)

    # --- models and status ----------------------------------------------------------------------------------------
    async def models(self, request: web.Request) -> web.Response:
        """Configured and loaded models with their memory use."""
        budget = {"gpu": self.settings.gpu_memory, "cpu": self.settings.cpu_memory}
        return web.json_response(
            {
                "models": self.manager.describe(),
                "default": self.settings.default_model,
                "memory": {"used": self.manager.used_bytes(), "budget": budget},
            }
        )

    async def load(self, request: web.Request) -> web.Response:
        """Load a configured model now."""
        entry = await self.manager.load(request.match_info["name"])
        return web.json_response({"model": entry.name, **entry.describe()})

    async def unload(self, request: web.Request) -> web.Response:
        """Finish its queued requests and free a model."""
        name = self.manager.resolve(request.match_info["name"])
        entry = self.manager.loaded.get(name)
        if entry is not None and entry.external:
            raise ApiError(
                409, "external_model", f"model {name!r} is owned by its host application (ComfyUI); unload it there"
            )
        return web.json_response({"model": name, "unloaded": await self.manager.unload(name)})

    async def health(self, request: web.Request) -> web.Response:
        """The process is up."""
        return web.json_response({"status": "ok", "uptime_s": round(time.time() - self.started, 3)})

    async def ready(self, request: web.Request) -> web.Response:
        """200 once the default model is loaded, 503 before."""
        name = self.settings.default_model
        if name is not None and name in self.manager.loaded:
            return web.json_response({"status": "ready", "model": name})
        raise ApiError(
            503,
            "not_ready",
            f"the default model {name!r} is not loaded yet; it loads on first use, or POST /v1/models/{name}/load",
        )

    async def metrics_text(self, request: web.Request) -> web.Response:
        """Prometheus text exposition."""
        return web.Response(body=self.metrics.render(), content_type="text/plain", charset="utf-8")

    async def openapi(self, request: web.Request, prefix: str = "") -> web.Response:
        """The OpenAPI 3 description of this API."""
        return web.json_response(openapi_spec(self.settings, prefix))

    def route_defs(self, prefix: str = "", access: Access | None = None) -> list[web.RouteDef]:
        """Every route of `schema.ROUTES`, under `prefix` (e.g. '/rewarddance' when mounted on ComfyUI's server)."""
        access = access or self.access()
        handlers: dict[str, Handler] = {
            **{name: (lambda n: lambda r: self.scoring(n, r))(name) for name in ENDPOINTS},
            "models": self.models,
            "load": self.load,
            "unload": self.unload,
            "health": self.health,
            "ready": self.ready,
            "metrics": self.metrics_text,
            "openapi": lambda r: self.openapi(r, prefix),
        }
        return [web.route(r.method, prefix + r.path, self.route(r.name, handlers[r.name], access)) for r in ROUTES]

    def preflight_defs(self, prefix: str = "", access: Access | None = None) -> list[web.RouteDef]:
        """An OPTIONS route per path of `schema.ROUTES`: CORS preflights (granted to allowed origins only)."""
        access = access or self.access()
        paths = dict.fromkeys(r.path for r in ROUTES)
        return [
            web.route("OPTIONS", prefix + p, self.preflight_handler([r.method for r in ROUTES if r.path == p], access))
            for p in paths
        ]

    def preflight_handler(self, methods: Iterable[str], access: Access) -> Handler:
        """The OPTIONS handler of one path: CORS permission for allowed origins, 403 for others."""
        methods = tuple(methods)

        async def handler(request: web.Request) -> web.StreamResponse:
            try:
                return preflight(request, access.policy, methods)
            except ApiError as exc:
                return self.error_response(exc)

        handler.__name__ = "rewarddance_preflight"
        return handler


SERVICE_KEY = web.AppKey("rewarddance_service", ScoringService)


def build_queries(endpoint: str, req: Any, config: Any) -> tuple[list, list]:
    """The engine queries of a request (and the round-robin pairs of a tournament), off the event loop."""
    if endpoint == "compare":
        return compare_queries(req.images, req.reference, req.prompt, config, req.few_shot), []
    if endpoint == "tournament":
        return tournament_queries(req.images, req.prompt, config)
    return score_queries(req.images, req.prompt, config, req.few_shot), []


@web.middleware
async def json_errors(request: web.Request, handler: Handler) -> web.StreamResponse:
    """Unknown paths and wrong methods answer in the API's JSON error shape too."""
    try:
        return await handler(request)
    except web.HTTPException as exc:
        if exc.status < 400:
            raise
        kind = {404: "not_found", 405: "method_not_allowed", 413: "body_too_large"}.get(exc.status, "http_error")
        message = {
            404: f"no route {request.path}; see GET /openapi.json",
            405: f"{request.method} is not allowed on {request.path}; see GET /openapi.json",
        }.get(exc.status, exc.reason)
        return web.json_response(
            ApiError(exc.status, kind, message).body(),
            status=exc.status,
            headers={k: v for k, v in exc.headers.items() if k == "Allow"},
        )


def create_app(settings: ServerSettings, service: ScoringService | None = None) -> web.Application:
    """A standalone aiohttp app serving the API at the root."""
    service = service or ScoringService(settings)
    app = web.Application(middlewares=[json_errors], client_max_size=settings.max_body_bytes + 2**20)
    app[SERVICE_KEY] = service
    app.router.add_routes(service.route_defs() + service.preflight_defs())
    if service.access().policy.hosts is None:
        log.warning(
            "answering every Host name (bound to %r without --allow-host); list the names clients use with "
            "--allow-host NAME to refuse the others",
            settings.host,
        )

    async def on_startup(_: web.Application) -> None:
        await service.startup()

    async def on_cleanup(_: web.Application) -> None:
        await service.shutdown()

    app.on_startup.append(on_startup)
    app.on_cleanup.append(on_cleanup)
    return app


def mount(
    target: Any,
    service: ScoringService,
    prefix: str = "/rewarddance",
    require_token_for_heavy: bool = False,
    allow_origins: Iterable[str] = (),
) -> None:
    """Attach the routes under `prefix` to an aiohttp Application or RouteTableDef (ComfyUI's server).

    The host checks Host names itself; cross-origin browser requests are refused unless in `allow_origins`.
    `require_token_for_heavy` (set it when the host listens beyond loopback): scoring, load and unload need
    `service.settings.token` and answer 403 while none is configured; health, ready, models, metrics and
    openapi stay open. Without it a configured token guards every route but health and ready.
    """
    if prefix and (not prefix.startswith("/") or prefix.endswith("/")):
        raise ValueError(f"prefix must start with '/' and not end with one, got {prefix!r}")
    policy = BrowserPolicy.build(allow_origins, hosts=None)
    if require_token_for_heavy:
        access = Access(policy, HEAVY_ROUTES, token_required=True)
    else:  # as the standalone server: a configured token guards every route but the open ones
        access = Access(policy, service.access().token_routes)
    defs = service.route_defs(prefix, access) + service.preflight_defs(prefix, access)
    if isinstance(target, web.Application):
        target.router.add_routes(defs)
    elif isinstance(target, web.RouteTableDef):
        for d in defs:
            target.route(d.method, d.path)(d.handler)
    else:
        raise TypeError(f"mount() takes an aiohttp Application or RouteTableDef, got {type(target).__name__}")
