"""`rewarddance serve`: run the API until SIGTERM/SIGINT, then finish in-flight requests and exit 0."""

from __future__ import annotations

import asyncio
import logging
import os
import signal
import sys
import threading

from aiohttp import web

from .app import ScoringService, create_app
from .errors import ApiError
from .settings import ServerSettings

log = logging.getLogger("rewarddance.server")
ABORT_MARGIN_S = 3.0  # unfinished work is abandoned this long before the grace period ends (at most half of it)


async def serve(settings: ServerSettings, ready_message: bool = True) -> None:
    """Serve until a stop signal: stop accepting, let in-flight requests finish within the grace period."""
    service = ScoringService(settings)
    app = create_app(settings, service)
    # handler_cancellation: a client that disconnects cancels its handler, so its queued work is dropped.
    runner = web.AppRunner(
        app,
        handler_cancellation=True,
        shutdown_timeout=settings.grace_period_s,
        keepalive_timeout=settings.keepalive_s,
        access_log=None,
    )
    await runner.setup()
    site = web.TCPSite(runner, settings.host, settings.port)
    stop = asyncio.Event()
    watchdog: threading.Timer | None = None
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        try:
            loop.add_signal_handler(sig, stop.set)
        except (NotImplementedError, RuntimeError):  # Windows: Ctrl+C still raises KeyboardInterrupt
            pass
    try:
        await site.start()
        if ready_message:
            host, port = runner.addresses[0][:2] if runner.addresses else (settings.host, settings.port)
            models = ", ".join(f"{n}={s.path}" for n, s in settings.models.items())
            print(
                f"rewarddance: serving on http://{host}:{port} (models: {models}; default {settings.default_model})",
                flush=True,
            )
        await stop.wait()
        print(
            f"rewarddance: stopping; finishing in-flight requests (up to {settings.grace_period_s:g} s)",
            file=sys.stderr,
            flush=True,
        )
        watchdog = enforce_grace_period(service, settings.grace_period_s)
    finally:
        await runner.cleanup()  # stops listening, waits for handlers, then app cleanup drains the batchers
        if watchdog is not None:
            watchdog.cancel()  # finished in time
    print("rewarddance: stopped", file=sys.stderr, flush=True)


def enforce_grace_period(service: ScoringService, grace: float) -> threading.Timer:
    """Keep shutdown within `grace` seconds: ABORT_MARGIN_S before its end (or half-way, for a short one), running
    batches stop at their next forward and queued requests get 503; at `grace` the process exits even if a forward
    is still running."""
    loop = asyncio.get_running_loop()
    loop.call_later(max(grace / 2, grace - ABORT_MARGIN_S), service.abort)

    def hard_exit() -> None:
        print("rewarddance: grace period over; exiting with work unfinished", file=sys.stderr, flush=True)
        os._exit(0)

    watchdog = threading.Timer(grace, hard_exit)
    watchdog.daemon = True
    watchdog.start()
    return watchdog


def run(settings: ServerSettings) -> int:
    """Blocking entry point of the CLI; returns the exit code (2 when a model or the address fails at start)."""
    logging.basicConfig(level=logging.INFO, format="rewarddance: %(message)s")
    try:
        asyncio.run(serve(settings))
    except ApiError as exc:  # a --preload model that cannot be loaded
        print(f"rewarddance: error: {exc.message}", file=sys.stderr)
        return 2
    except OSError as exc:  # the address is in use or cannot be bound
        print(
            f"rewarddance: error: cannot listen on {settings.host}:{settings.port} ({exc.strerror or exc}); "
            "choose another --port or stop the other server",
            file=sys.stderr,
        )
        return 2
    return 0
