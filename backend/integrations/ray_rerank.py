"""Batch scoring over a Ray cluster: the rows of a folder or a manifest table (`ray_manifest`) go through Ray Data
to a pool of `RewardActor`s (`ray_scorer`), and come back as result shards in an output folder (`ray_shards`);
rows already in the output are skipped, so a killed job is resumed by running it again.

    from rewarddance.backend.integrations.ray_rerank import RayOptions, ray_rerank
    summary = ray_rerank("manifest.parquet", "scores/", "path/to/judge", options=RayOptions(actors=4, gpus_per_actor=1))
"""

from __future__ import annotations

import hashlib
import json
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from .ray_manifest import complete_rows, folder_rows, manifest_rows
from .ray_shards import SHARD_FORMATS, done_ids, next_shard_index, prepare_output, write_shard

INSTALL_HINT = 'pip install -e ".[ray]"'  # from a checkout; `pip install "rewarddance[ray]"` from the registry
MODES = ("pointwise", "pairwise")
SETTINGS_LOADING = ("dtype", "min_pixels", "max_pixels", "video_max_pixels", "max_frames", "fps")  # decide a score


@dataclass(frozen=True)
class RayRerankSummary:
    """What one run did: rows scored, rows reported unreadable, rows skipped as already done, shards written."""

    out: Path
    scored: int
    failed: int
    skipped: int
    shards: int


@dataclass(frozen=True)
class RayOptions:
    """How the work is spread: the cluster (None: `ray.init()`'s own choice), actors, GPUs per actor, rows per
    actor call, rows per output shard and its format."""

    address: str | None = None
    actors: int = 1
    gpus_per_actor: float = 0.0
    batch_size: int = 16
    shard_rows: int = 1024
    shard_format: str = "parquet"

    def check(self) -> RayOptions:
        """Refuse counts Ray would choke on, naming the flag."""
        positive_int("--actors", self.actors)
        positive_int("--batch-size", self.batch_size)
        positive_int("--shard-rows", self.shard_rows)
        gpus = self.gpus_per_actor
        if isinstance(gpus, bool) or not isinstance(gpus, (int, float)) or not math.isfinite(gpus) or gpus < 0:
            raise ValueError(
                f"--gpus-per-actor must be a number >= 0 (e.g. 1, or 0.5 for two actors per GPU), got {gpus}"
            )
        if self.shard_format not in SHARD_FORMATS:
            raise ValueError(f"--shard-format must be one of {', '.join(SHARD_FORMATS)}, got {self.shard_format!r}")
        return self


def positive_int(flag: str, value: Any) -> None:
    """Refuse anything but an integer >= 1."""
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise ValueError(f"{flag} must be a positive integer, got {value!r}")


def require_ray() -> Any:
    """The `ray` module with Ray Data, or an ImportError saying how to install it."""
    from ..dependencies import MissingDependency, require

    try:
        require("ray.data", "rerank --ray")
        return require("ray", "rerank --ray")
    except MissingDependency as exc:
        raise MissingDependency(
            f'rerank --ray needs Ray Data, which is not installed: `{INSTALL_HINT}` (or `pip install "ray[data]"`)'
        ) from exc


def ray_rerank(
    source: str | Path | list[dict],
    out: str | Path,
    model: str,
    *,
    prompt: str | None = None,
    mode: str = "pointwise",
    reference: str | Path | None = None,
    options: RayOptions | None = None,
    loading: dict[str, Any] | None = None,
    scoring: dict[str, Any] | None = None,
    overwrite: bool = False,
    progress: bool = True,
) -> RayRerankSummary:
    """Score a folder, a manifest table (.parquet/.jsonl/.csv) or a list of rows on Ray into shards in `out`."""
    ray = require_ray()
    options = (options or RayOptions()).check()
    if mode not in MODES:
        raise ValueError(f"mode must be pointwise or pairwise, got {mode!r}")
    reference = str(reference) if reference is not None else None
    if reference is not None and not Path(reference).is_file():
        raise ValueError(f"--reference {reference!r} does not exist; pass the reference image")
    rows = complete_rows(source_rows(source, prompt), prompt, mode, reference)
    loading, scoring = dict(loading or {}), dict(scoring or {})
    out = Path(out)
    prepare_output(out, run_settings(model, mode, reference, loading, scoring), overwrite)
    done = done_ids(out)
    todo = [r for r in rows if r["id"] not in done]
    if not todo:
        return RayRerankSummary(out, 0, 0, len(rows), 0)
    start_ray(ray, options.address)
    results = run_dataset(ray, todo, model, mode, loading, scoring, options, progress)
    scored = failed = shards = 0
    index = next_shard_index(out)
    for batch in results:
        write_shard(out, index + shards, batch, options.shard_format)
        shards += 1
        failed += sum(1 for r in batch if r["error"])
        scored += sum(1 for r in batch if not r["error"])
    return RayRerankSummary(out, scored, failed, len(rows) - len(todo), shards)


def source_rows(source: str | Path | list[dict], prompt: str | None) -> list[dict]:
    """The rows of a folder, a manifest table or a list of row dicts."""
    if isinstance(source, list):
        return source
    path = Path(source).expanduser()
    if path.is_dir():
        return folder_rows(path, prompt)
    return manifest_rows(path)


def run_settings(model: str, mode: str, reference: str | None, loading: dict, scoring: dict) -> dict:
    """Everything besides a row that decides its score, as JSON values (kept in the output's _settings.json)."""
    settings = {
        "model": model,
        "mode": mode,
        "reference": file_digest(Path(reference)) if reference else None,
        **{k: loading.get(k) for k in SETTINGS_LOADING},
        **{k: v for k, v in scoring.items() if k != "max_batch_tokens"},
    }
    return json.loads(json.dumps(settings, sort_keys=True))


def file_digest(path: Path) -> str:
    """The first 16 hex digits of the file's SHA-256."""
    return hashlib.sha256(path.read_bytes()).hexdigest()[:16]


def start_ray(ray: Any, address: str | None) -> None:
    """Connect to the cluster at `address` ('auto': the one `ray start` started) or, with None, let `ray.init()`
    choose (an existing cluster, else a new local instance); nothing when this process is connected already."""
    if not ray.is_initialized():
        ray.init(address=address, log_to_driver=False)


def run_dataset(
    ray: Any,
    todo: list[dict],
    model: str,
    mode: str,
    loading: dict,
    scoring: dict,
    options: RayOptions,
    progress: bool,
) -> Any:
    """The scored rows as an iterator of shard-sized lists of result dicts (Ray Data streams them as actors finish)."""
    from .ray_scorer import RewardActor

    ray.data.DataContext.get_current().enable_progress_bars = progress
    items = [{k: ("" if v is None else v) for k, v in row.items()} for row in todo]  # no all-None columns
    dataset = ray.data.from_items(items).map_batches(
        RewardActor,
        fn_constructor_kwargs={"model": model, "loading": loading, "scoring": scoring, "mode": mode},
        compute=ray.data.ActorPoolStrategy(size=options.actors),
        num_gpus=options.gpus_per_actor or None,
        batch_size=options.batch_size,
        batch_format="numpy",
    )
    for batch in dataset.iter_batches(batch_size=options.shard_rows, batch_format="numpy"):
        yield [result_row(batch, i) for i in range(len(batch["id"]))]


def result_row(batch: dict, i: int) -> dict:
    """Row `i` of a result batch as plain Python values (score None for an unreadable row)."""
    score = float(batch["score"][i])
    error = batch["error"][i]
    return {
        "id": str(batch["id"][i]),
        "path": str(batch["path"][i]),
        "prompt": str(batch["prompt"][i]),
        "score": None if math.isnan(score) else score,
        "error": str(error) if error else None,
    }
