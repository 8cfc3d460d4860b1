"""What the operator configures: models by name, batching, limits and memory budgets (flags or a TOML/YAML file).

# rewarddance.toml                         rewarddance serve --config rewarddance.toml
port = 8765
default_model = "judge"
max_batch_tokens = 32768
gpu_memory = "60GB"                        # loaded models are evicted least-recently-used beyond this
allow_origins = ["http://localhost:3000"]  # web pages allowed to call the API (default: none but its own)
allow_hosts = ["gpubox.local"]             # Host names answered besides loopback ones and the bound address
[models.judge]
path = "Qwen/Qwen2.5-VL-7B-Instruct"
dtype = "bf16"
quantization = "nf4"                       # none (default), int8 or nf4: bitsandbytes, vision tower kept
pinned = true                              # never evicted
preload = true                             # loaded at start (otherwise on first use)
[models.judge.scoring]                     # this model's default ScoringConfig fields
criteria = ["alignment"]
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any

from ..config_files import TOKEN_ENV, ConfigFileError, is_loopback
from ..reward_model import LOADING_FIELDS

MODEL_NAME_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$")
_UNITS = {
    "": 1,
    "b": 1,
    "kb": 10**3,
    "mb": 10**6,
    "gb": 10**9,
    "tb": 10**12,
    "kib": 2**10,
    "mib": 2**20,
    "gib": 2**30,
    "tib": 2**40,
}


class SettingsError(ConfigFileError):
    """A server setting is unusable; the message names it and the fix."""


def check_model_name(name: Any) -> str:
    """A model name: letters, digits, '.', '_', '-' (never a path); raise SettingsError otherwise."""
    if not isinstance(name, str) or not MODEL_NAME_RE.match(name) or ".." in name:
        raise SettingsError(
            f"model name {name!r} is not allowed; use 1-64 letters, digits, '.', '_' or '-' (a name, not a path)"
        )
    return name


def parse_bytes(value: Any, what: str) -> int | None:
    """'40GB', '512MiB', '1.5 GiB' or a number of bytes -> bytes (None stays None)."""
    if value is None:
        return None
    if isinstance(value, bool):
        raise SettingsError(f"{what}: expected a size such as '40GB', got {value!r}")
    if isinstance(value, (int, float)):
        if value <= 0:
            raise SettingsError(f"{what}: must be positive, got {value!r}")
        return int(value)
    m = re.fullmatch(r"\s*([0-9]*\.?[0-9]+)\s*([A-Za-z]*)\s*", str(value))
    if not m or m.group(2).lower() not in _UNITS:
        raise SettingsError(f"{what}: expected a size such as '40GB' or '512MiB', got {value!r}")
    size = int(float(m.group(1)) * _UNITS[m.group(2).lower()])
    if size <= 0:
        raise SettingsError(f"{what}: must be positive, got {value!r}")
    return size


@dataclass
class ModelSpec:
    """One servable model: where its weights are and how to load it. Requests name it, never its path."""

    name: str
    path: str
    dtype: str = "auto"
    quantization: str = "none"  # none, int8 or nf4 (bitsandbytes)
    device: str = "auto"
    attn_implementation: str | None = None
    device_map: str | None = None
    min_pixels: int | None = None
    max_pixels: int | None = None
    video_max_pixels: int | None = None
    max_frames: int = 32
    fps: float = 2.0
    trust_remote_code: bool = False  # off unless the operator enables it for this model
    pinned: bool = False  # never evicted by the memory budget
    preload: bool = False  # loaded at start instead of on first use
    scoring: dict[str, Any] = field(default_factory=dict)  # default ScoringConfig fields of this model

    def validate(self) -> ModelSpec:
        """Raise SettingsError naming the bad field."""
        check_model_name(self.name)
        if not isinstance(self.path, str) or not self.path.strip():
            raise SettingsError(f"models.{self.name}.path: give a checkpoint directory or a hub id")
        for flag in ("trust_remote_code", "pinned", "preload"):
            if not isinstance(getattr(self, flag), bool):
                raise SettingsError(f"models.{self.name}.{flag}: expected true or false, got {getattr(self, flag)!r}")
        from ..vlm.quantization import check_quantization

        try:
            self.quantization = check_quantization(self.quantization)
        except ValueError as exc:
            raise SettingsError(f"models.{self.name}.quantization: {exc}") from exc
        if not isinstance(self.scoring, dict):
            raise SettingsError(f"models.{self.name}.scoring: expected a table of scoring options")
        from ..scoring.config import ScoringConfig

        try:
            ScoringConfig().with_overrides(**self.scoring)
        except (TypeError, ValueError) as exc:
            raise SettingsError(f"models.{self.name}.scoring: {exc}") from exc
        return self

    def load_options(self) -> dict[str, Any]:
        """Keyword arguments of `RewardModel.from_pretrained` (without the path)."""
        return {k: getattr(self, k) for k in (*LOADING_FIELDS, "trust_remote_code")} | dict(self.scoring)


@dataclass
class ServerSettings:
    """Every server knob, validated in one place."""

    models: dict[str, ModelSpec] = field(default_factory=dict)
    default_model: str | None = None  # None: the first configured model
    host: str = "127.0.0.1"
    port: int = 8765
    token: str | None = None  # bearer token; required to bind any non-loopback address
    max_batch_tokens: int | None = None  # tokens per forward; None: 16384 on CUDA, 1536 on CPU
    max_query_tokens: int = 16384  # tokens of one query (a few images plus instructions); longer: 413
    max_delay_ms: float = 10.0  # how long the first request of a batch waits for company
    max_queue: int = 1024  # queued requests per model before answering 503
    request_timeout_s: float = 300.0
    max_body_mb: float = 64.0
    max_image_pixels: int = 64 * 2**20  # per decoded image or frame
    max_request_pixels: int = 256 * 2**20  # all images and frames of one request together
    max_inflight_pixels: int = 64 * 2**20  # decoded pixels all requests in flight hold together (503 beyond)
    gpu_memory: int | None = None  # bytes of loaded weights allowed on GPUs (None: no limit)
    cpu_memory: int | None = None  # bytes of loaded weights allowed in CPU memory (None: no limit)
    grace_period_s: float = 25.0  # SIGTERM: how long in-flight requests may take to finish
    keepalive_s: float = 15.0  # an idle keep-alive connection is closed after this long
    body_timeout_s: float = 60.0  # a request body must arrive within this long (408 otherwise)
    min_residency_s: float = 10.0  # a busy model is not evicted for another before it has been loaded this long
    allow_origins: list[str] = field(default_factory=list)  # browser origins allowed besides the server's own
    allow_hosts: list[str] = field(default_factory=list)  # Host names answered besides loopback and the bound one

    def validate(self, require_models: bool = True) -> ServerSettings:
        """Raise SettingsError naming the bad setting and the fix; return self.

        `require_models=False` allows starting empty, for a host that registers its own loaded models.
        """
        if require_models and not self.models:
            raise SettingsError("no models configured; pass --model NAME=PATH (or [models.NAME] in --config)")
        for name, spec in self.models.items():
            if name != spec.name:
                raise SettingsError(f"models.{name}: the spec is named {spec.name!r}")
            spec.validate()
        if self.default_model is None and self.models:
            self.default_model = next(iter(self.models))
        if self.default_model is not None and self.default_model not in self.models:
            raise SettingsError(
                f"default_model {self.default_model!r} is not configured; configured: {', '.join(self.models)}"
            )
        if not isinstance(self.port, int) or isinstance(self.port, bool) or not 0 <= self.port <= 65535:
            raise SettingsError(f"port must be an integer in 0..65535, got {self.port!r}")
        if self.token is not None and (not isinstance(self.token, str) or len(self.token) < 8):
            raise SettingsError("token must be a string of at least 8 characters")
        if not is_loopback(self.host) and not self.token:
            raise SettingsError(
                f"binding {self.host!r} exposes the server beyond this machine; set a bearer token with --token "
                f"or the {TOKEN_ENV} environment variable (or bind 127.0.0.1)"
            )
        positive = {
            "max_delay_ms": (self.max_delay_ms, True),
            "max_queue": (self.max_queue, False),
            "request_timeout_s": (self.request_timeout_s, False),
            "max_body_mb": (self.max_body_mb, False),
            "max_image_pixels": (self.max_image_pixels, False),
            "grace_period_s": (self.grace_period_s, True),
            "max_request_pixels": (self.max_request_pixels, False),
            "max_query_tokens": (self.max_query_tokens, False),
            "min_residency_s": (self.min_residency_s, True),
            "keepalive_s": (self.keepalive_s, False),
            "body_timeout_s": (self.body_timeout_s, False),
            "max_inflight_pixels": (self.max_inflight_pixels, False),
        }
        for name, (value, zero_ok) in positive.items():
            if (
                isinstance(value, bool)
                or not isinstance(value, (int, float))
                or value < 0
                or (value == 0 and not zero_ok)
            ):
                raise SettingsError(
                    f"{name} must be a {'non-negative' if zero_ok else 'positive'} number, got {value!r}"
                )
        from .origin import normalize_host, normalize_origin

        self.allow_origins = checked_list(self.allow_origins, "allow_origins (--allow-origin)", normalize_origin)
        self.allow_hosts = checked_list(self.allow_hosts, "allow_hosts (--allow-host)", normalize_host)
        if self.max_batch_tokens is not None and (
            not isinstance(self.max_batch_tokens, int) or self.max_batch_tokens < 1
        ):
            raise SettingsError(f"max_batch_tokens must be a positive integer, got {self.max_batch_tokens!r}")
        return self

    @property
    def max_body_bytes(self) -> int:
        """The request body limit in bytes."""
        return int(self.max_body_mb * 2**20)


def checked_list(value: Any, what: str, normalize: Callable[[str, str], str]) -> list[str]:
    """An allow list (one string or a list of them), each entry normalized (SettingsError naming `what`)."""
    items = [value] if isinstance(value, str) else value
    if not isinstance(items, (list, tuple)) or not all(isinstance(v, str) for v in items):
        raise SettingsError(f"{what}: expected a list of strings, got {value!r}")
    try:
        return list(dict.fromkeys(normalize(v, what) for v in items))
    except ValueError as exc:
        raise SettingsError(str(exc)) from None


def parse_model_flag(value: str) -> tuple[str, str]:
    """`NAME=PATH` (or a bare PATH, named after its last component) -> (name, path)."""
    if "=" in value:
        name, path = value.split("=", 1)
    else:
        path = value
        name = re.sub(r"[^A-Za-z0-9._-]", "-", Path(value.rstrip("/")).name) or "model"
    return check_model_name(name.strip()), path.strip()


def settings_from_dict(data: dict[str, Any], base: ServerSettings | None = None) -> ServerSettings:
    """Apply a config mapping (top-level server keys plus a `models` table) onto `base`."""
    settings = base or ServerSettings()
    known = {f.name for f in fields(ServerSettings)} - {"models"}
    spec_fields = {f.name for f in fields(ModelSpec)} - {"name"}
    for key, value in data.items():
        if key == "models":
            if not isinstance(value, dict):
                raise SettingsError("models: expected a table of NAME = {path = ...}")
            for name, table in value.items():
                check_model_name(name)
                if isinstance(table, str):
                    table = {"path": table}
                if not isinstance(table, dict) or "path" not in table:
                    raise SettingsError(f'models.{name}: needs at least path = "<checkpoint dir or hub id>"')
                unknown = sorted(set(table) - spec_fields)
                if unknown:
                    raise SettingsError(
                        f"models.{name}: unknown key(s) {', '.join(unknown)}; known: {', '.join(sorted(spec_fields))}"
                    )
                settings.models[name] = ModelSpec(name=name, **table)
        elif key in ("gpu_memory", "cpu_memory"):
            setattr(settings, key, parse_bytes(value, key))
        elif key in known:
            setattr(settings, key, value)
        else:
            raise SettingsError(f"unknown setting {key!r}; known: models, {', '.join(sorted(known))}")
    return settings
