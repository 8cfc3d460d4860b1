"""`rewarddance serve`: the HTTP scoring backend, its settings from --config plus flags."""

from __future__ import annotations

import argparse
from typing import Any

from .command import Command
from .errors import CLIError
from .model_options import LOADING_FLAGS, add_loading_flags


def serve_settings(args: argparse.Namespace) -> Any:
    """ServerSettings from --config plus flags (flags win)."""
    import os

    from ..config_files import TOKEN_ENV, read_config_file
    from ..server.settings import ServerSettings, parse_bytes, settings_from_dict

    settings = settings_from_dict(read_config_file(args.config)) if args.config else ServerSettings()
    add_flag_models(settings, args)
    if args.preload:
        for spec in settings.models.values():
            spec.preload = True
    flags = {
        "host": args.host,
        "port": args.port,
        "default_model": args.default_model,
        "max_batch_tokens": args.max_batch_tokens,
        "max_query_tokens": args.max_query_tokens,
        "max_delay_ms": args.max_delay_ms,
        "max_queue": args.max_queue,
        "request_timeout_s": args.request_timeout,
        "max_body_mb": args.max_body_mb,
        "max_inflight_pixels": args.max_inflight_pixels,
        "grace_period_s": args.grace_period,
    }
    for key, value in flags.items():
        if value is not None:
            setattr(settings, key, value)
    for key in ("allow_origins", "allow_hosts"):  # repeatable flags replace the config file's list
        if getattr(args, key):
            setattr(settings, key, getattr(args, key))
    for key in ("gpu_memory", "cpu_memory"):
        if getattr(args, key) is not None:
            setattr(settings, key, parse_bytes(getattr(args, key), "--" + key.replace("_", "-")))
    settings.token = args.token or settings.token or os.environ.get(TOKEN_ENV) or None
    return settings.validate()


def add_flag_models(settings: Any, args: argparse.Namespace) -> None:
    """Add the --model NAME=PATH models (with the loading flags) and apply --pin / --trust-remote-code."""
    from ..reward_model import LOADING_FIELDS
    from ..server.settings import ModelSpec, parse_model_flag

    load = {k: getattr(args, k) for k in LOADING_FIELDS if getattr(args, k) is not None}
    for flag in args.model or []:
        name, path = parse_model_flag(flag)
        if name in settings.models and not args.config:
            raise CLIError(f"--model {flag!r}: the name {name!r} is used twice")
        settings.models[name] = ModelSpec(name=name, path=path, preload=args.preload, **load)
    for option, dest, attr in (
        ("--pin", "pin", "pinned"),
        ("--trust-remote-code", "trust_remote_code", "trust_remote_code"),
    ):
        for name in getattr(args, dest) or []:
            if name not in settings.models:
                raise CLIError(
                    f"{option} {name!r}: no model of that name; configured: {', '.join(settings.models) or 'none'}"
                )
            setattr(settings.models[name], attr, True)


def cmd_serve(args: argparse.Namespace) -> int:
    """Run the HTTP scoring backend until SIGTERM / Ctrl+C."""
    from ..server.run import run

    settings = serve_settings(args)
    check_served_models(settings)
    return run(settings)


def check_served_models(settings: Any) -> None:
    """Refuse to start when a configured model is neither a directory nor a hub id we can fetch (each one named)."""
    from ..model_sources import source_problem

    problems = [
        f"model {name!r}: {problem}" for name, spec in settings.models.items() if (problem := source_problem(spec.path))
    ]
    if problems:
        raise CLIError("; ".join(problems) + " (fix --model NAME=PATH or the config file's [models.NAME] path)")


def add_serve_options(p: argparse.ArgumentParser) -> None:
    """Options of `rewarddance serve`."""
    p.add_argument("--config", default=None, help="TOML or YAML file with server settings and [models.NAME] tables")
    p.add_argument(
        "--model",
        action="append",
        metavar="NAME=PATH",
        help="serve a checkpoint directory or hub id under NAME (repeatable; the first is the default)",
    )
    p.add_argument("--default-model", default=None, help="model used when a request names none")
    p.add_argument("--host", default=None, help="address to bind (default 127.0.0.1; others need --token)")
    p.add_argument("--port", type=int, default=None, help="port (default 8765; 0 picks a free one)")
    p.add_argument("--token", default=None, help="bearer token clients must send (default: $REWARDDANCE_TOKEN)")
    p.add_argument(
        "--allow-origin",
        action="append",
        dest="allow_origins",
        metavar="ORIGIN",
        help="let web pages from ORIGIN (scheme://host[:port], or '*') call the API; cross-origin browser "
        "requests are refused by default (repeatable)",
    )
    p.add_argument(
        "--allow-host",
        action="append",
        dest="allow_hosts",
        metavar="NAME",
        help="answer requests for Host NAME besides loopback names and --host (or '*' for any; repeatable); "
        "binding 0.0.0.0 without it answers every name",
    )
    p.add_argument("--preload", action="store_true", help="load every model at start instead of on first use")
    p.add_argument("--pin", action="append", metavar="NAME", help="never evict this model (repeatable)")
    p.add_argument(
        "--trust-remote-code",
        action="append",
        metavar="NAME",
        help="allow this model's own Python code from its checkpoint (off by default; repeatable)",
    )
    add_batching_options(p)
    add_serve_loading_options(p)


def add_batching_options(p: argparse.ArgumentParser) -> None:
    """The server's batching, queue, memory and shutdown limits."""
    g = p.add_argument_group("batching and limits")
    g.add_argument(
        "--max-batch-tokens", type=int, default=None, help="tokens per forward (default 16384 GPU / 1536 CPU)"
    )
    g.add_argument(
        "--max-query-tokens",
        type=int,
        default=None,
        help="tokens of one query, images included, before 413 (default 16384: a few images plus instructions)",
    )
    g.add_argument("--max-delay-ms", type=float, default=None, help="how long a request waits for company (default 10)")
    g.add_argument("--max-queue", type=int, default=None, help="queued requests per model before 503 (default 1024)")
    g.add_argument("--request-timeout", type=float, default=None, help="seconds per request before 504 (default 300)")
    g.add_argument("--max-body-mb", type=float, default=None, help="request body limit in MB (default 64)")
    g.add_argument(
        "--max-inflight-pixels",
        type=int,
        default=None,
        help="decoded image pixels all requests in flight may hold together before 503 (default 67108864)",
    )
    g.add_argument("--gpu-memory", default=None, help="GPU bytes loaded models may use, e.g. 40GB (LRU eviction)")
    g.add_argument("--cpu-memory", default=None, help="CPU bytes loaded models may use, e.g. 16GB")
    g.add_argument(
        "--grace-period", type=float, default=None, help="seconds in-flight requests get at shutdown (default 25)"
    )


def add_serve_loading_options(p: argparse.ArgumentParser) -> None:
    """How the models given with --model are loaded."""
    g = p.add_argument_group("loading (models given with --model)")
    add_loading_flags(g, list(LOADING_FLAGS), {})


COMMANDS = (
    Command("serve", "run the HTTP scoring backend (model loading, dynamic batching)", add_serve_options, cmd_serve),
)
