"""The one run runtime every trainer uses (RL on generators, reward-model training).

A trainer supplies a `RunTask`: its trainable tensors, its plain-data config, the config values a checkpoint
must match, and a `train_step`. The runtime owns everything else:

- the step loop, progress and interrupts (Ctrl+C, `should_stop()` after every step, a host's cancel exception);
- rollback of a step cut short by an interrupt (the trainable tensors and the optimizer go back to the last
  finished step, so a checkpoint never holds a half-applied step);
- the non-finite policy (a non-finite loss piece or gradient skips that update, logs it and counts it);
- one checkpoint format (`<out>/checkpoint/`: trainable.safetensors, optimizer.pt, state.json), written to a
  temporary directory and swapped in (a failed write, e.g. a full disk, removes the temporary directory and
  keeps the previous checkpoint), `keep_checkpoints` of them kept (the earlier ones in
  `<out>/checkpoints/step-N`), and one resume contract (a checkpoint of a different run is refused);
- the JSONL log (`<out>/log.jsonl`, rows keyed by step: a resume keeps the rows up to the checkpoint's step,
  one per step and kind, and drops a line a crash cut short, rewriting the file atomically), the chart
  (`<out>/chart.png`) and the summary (`<out>/summary.json`, plain data, replaced atomically);
- several processes under `accelerate launch`: each process trains on its share of a step, gradients are
  averaged across processes before every update, only the main process writes, and the run ends by checking
  that every process holds the same weights.
"""

from __future__ import annotations

import copy
import hashlib
import json
import logging
import os
import shutil
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path
from typing import Any

import torch

from .charts import line_panels
from .run_log import append_row, keyed_rows, read_rows, replace_text, sync_dir, truncate_after, writing

log = logging.getLogger("rewarddance.train")

Progress = Callable[[int, int, dict], None]
CHECKPOINT = "checkpoint"
HISTORY = "checkpoints"  # earlier checkpoints kept by `keep_checkpoints` > 1: checkpoints/step-NNNNNNN
ChartPanels = list[tuple[str, list[str]]]


class RunError(ValueError):
    """A run cannot start or continue as asked (a checkpoint of another run, replicas out of sync)."""


def distributed() -> tuple[int, int]:
    """(rank, world size) of this process (1 process without torch.distributed)."""
    if torch.distributed.is_available() and torch.distributed.is_initialized():
        return torch.distributed.get_rank(), torch.distributed.get_world_size()
    return 0, 1


def end_processes(wait_hours: float = 6.0) -> None:
    """Wait until every process is done (the main one may still be exporting and evaluating: up to
    `wait_hours`, on a gloo group of its own so the training group's timeout does not apply), then leave the
    process group together; a process that leaves while another still holds its connections can abort."""
    if torch.distributed.is_available() and torch.distributed.is_initialized():
        waiting = torch.distributed.new_group(backend="gloo", timeout=timedelta(hours=wait_hours))
        torch.distributed.barrier(group=waiting)
        torch.distributed.destroy_process_group()


def accelerate_device() -> str:
    """This process's device under `accelerate launch` (joins the process group accelerate set up)."""
    from accelerate import PartialState

    return str(PartialState().device)


def renamed_keys(data: dict[str, Any], renames: dict[str, str], where: str) -> dict[str, Any]:
    """`data` with deprecated keys moved to their new names (a warning names each; both given is an error)."""
    out = dict(data)
    for old, new in renames.items():
        if old not in out:
            continue
        if new in out:
            raise ValueError(f"{where}: both {old!r} (deprecated) and {new!r} are set; keep only {new!r}")
        log.warning("%s: %r is deprecated and will be removed in the next release; use %r", where, old, new)
        out[new] = out.pop(old)
    return out


class RunTask:
    """What a trainer supplies to the runtime; the defaults suit a trainer with one update per step."""

    out: Path
    steps: int
    save_every: int = 0
    keep_checkpoints: int = 1  # checkpoints kept: checkpoint/ plus the newest N-1 earlier ones in checkpoints/
    max_grad_norm: float = 1.0
    snapshot_each_step: bool = False  # True for trainers that apply several updates per step (rolled back)
    chart_panels: ChartPanels = []
    name: str = "rewarddance train"  # how log messages start

    def trainable(self) -> dict[str, torch.Tensor]:
        """The live tensors of the run by name: saved, restored and snapshotted; those that require gradients are
        the ones optimised (and averaged across processes), others are the trainer's own state."""
        raise NotImplementedError

    def config_record(self) -> dict[str, Any]:
        """The run's config as plain data (saved with every checkpoint)."""
        raise NotImplementedError

    def identity(self) -> dict[str, Any]:
        """The config values a checkpoint must match to be continued by this run."""
        raise NotImplementedError

    def train_step(self, run: Run) -> dict[str, Any]:
        """One step (losses through `run.backward`, updates through `run.optimizer_step`); its log metrics."""
        raise NotImplementedError

    def begin(self) -> dict[str, Any]:
        """Summary fields measured when the run first starts (e.g. the reward before training)."""
        return {}

    def after_step(self, run: Run, row: dict[str, Any]) -> None:
        """Called after each logged step (e.g. a periodic evaluation that logs its own row)."""

    def finish(self, run: Run) -> dict[str, Any]:
        """Evaluate and export after the last step; summary fields (plain data)."""
        return {}

    def trainer_state(self) -> dict[str, Any]:
        """Trainer-specific counters saved with a checkpoint (JSON)."""
        return {}

    def restore_trainer_state(self, state: dict[str, Any], rows: list[dict]) -> None:
        """Take back `trainer_state()` and the log rows kept after a resume."""

    def upgrade_saved_config(self, config: dict[str, Any]) -> dict[str, Any]:
        """A checkpoint's saved config in today's key names (checkpoints of the previous release)."""
        return config

    def legacy_checkpoint(self) -> tuple[Path, dict[str, torch.Tensor]] | None:
        """A checkpoint in the previous release's layout: its directory and its tensors in `trainable()` names."""
        return None

    def legacy_initial(self) -> dict[str, Any]:
        """The initial summary fields of a run checkpointed by the previous release (not kept in its state)."""
        return {}


@dataclass
class Snapshot:
    """The trainable tensors and optimizer state at a finished step."""

    step: int
    tensors: list[torch.Tensor]
    optimizer: dict


class Run:
    """The state the runtime keeps for one task: step, optimizer, skipped updates, logged rows."""

    def __init__(self, task: RunTask, optimizer: torch.optim.Optimizer):
        self.task, self.optimizer = task, optimizer
        self.out = Path(task.out)
        self.rank, self.world = distributed()
        self.step = 0
        self.skipped = 0
        self.rows: list[dict] = []
        self.pending_bad: str | None = None
        self.initial: dict[str, Any] = {}  # summary fields measured when the run first started (kept in checkpoints)
        self.saved_step: int | None = None  # the step of the checkpoint on disk, once this run wrote or read one
        self._snapshot: Snapshot | None = None

    @property
    def main(self) -> bool:
        """True in the process that writes files (the only one without accelerate)."""
        return self.rank == 0

    def params(self) -> list[torch.Tensor]:
        """The trainable tensors in a fixed order."""
        return list(self.task.trainable().values())

    # --- gradients ----------------------------------------------------------------------------------------------
    def backward(self, loss: torch.Tensor) -> None:
        """Accumulate a loss piece's gradients (a non-finite piece marks the whole update for skipping)."""
        if not torch.isfinite(loss.detach()).all():
            self.pending_bad = f"non-finite loss {float(loss.detach().float().sum())}"
            return
        loss.backward()

    def optimizer_step(self) -> bool:
        """Average gradients across processes; skip the update if anything is non-finite, else clip and step."""
        params = [p for p in self.params() if p.requires_grad]  # not a trainer's own state (nft's old policy)
        if self.world > 1:
            for p in params:
                if p.grad is None:
                    p.grad = torch.zeros_like(p)
                torch.distributed.all_reduce(p.grad)
                p.grad /= self.world
        if self.pending_bad is None and not all(p.grad is None or torch.isfinite(p.grad).all() for p in params):
            self.pending_bad = "non-finite gradient"
        if self.pending_bad is not None:
            log.warning("%s: step %d: %s; update skipped", self.task.name, self.step + 1, self.pending_bad)
            self.skipped += 1
            self.pending_bad = None
            self.optimizer.zero_grad(set_to_none=True)
            return False
        torch.nn.utils.clip_grad_norm_(params, self.task.max_grad_norm)
        self.optimizer.step()
        self.optimizer.zero_grad(set_to_none=True)
        return True

    # --- a step cut short -----------------------------------------------------------------------------------------
    def snapshot(self) -> None:
        """Remember the trainable tensors and optimizer state of the current (finished) step."""
        if self.task.snapshot_each_step:
            tensors = [p.detach().clone() for p in self.params()]
            self._snapshot = Snapshot(self.step, tensors, copy.deepcopy(self.optimizer.state_dict()))

    def roll_back_unfinished_step(self) -> None:
        """After an interrupt mid-step: back to the state of the last finished step (gradients dropped)."""
        snap = self._snapshot
        if snap is not None and snap.step == self.step:
            with torch.no_grad():
                for p, saved in zip(self.params(), snap.tensors):
                    p.copy_(saved)
            self.optimizer.load_state_dict(snap.optimizer)
        self.optimizer.zero_grad(set_to_none=True)
        self.pending_bad = None

    # --- files ----------------------------------------------------------------------------------------------------
    def log(self, row: dict) -> None:
        """Append a row to the JSONL log (main process only)."""
        if self.main:
            append_row(self.out / "log.jsonl", row, self.kept_state())

    def checkpoint_dir(self) -> Path:
        """Where the checkpoint lives."""
        return self.out / CHECKPOINT

    def save_checkpoint(self) -> Path:
        """Trainable tensors, optimizer and step, written to a temp dir and swapped in (never half-written; a
        failed write, e.g. a full disk, removes the temp dir, keeps the previous checkpoint and says so)."""
        final = self.checkpoint_dir()
        if not self.main:
            return final
        tmp = final.with_name(CHECKPOINT + ".tmp")
        with writing(tmp, self.kept_state()):
            try:
                self._write_checkpoint(tmp)
            except BaseException:
                shutil.rmtree(tmp, ignore_errors=True)
                raise
            self._swap_in(tmp, final)
        self.saved_step = self.step
        return final

    def kept_state(self) -> str:
        """What a failed write leaves for a resume, in words."""
        if self.saved_step is not None:
            return f"the checkpoint of step {self.saved_step} is kept: free some space and run the same command again"
        return "free some space and run the same command again"

    def _write_checkpoint(self, tmp: Path) -> None:
        """The checkpoint's three files in `tmp` (synced, so the swap never publishes unwritten data)."""
        from safetensors.torch import save_file

        shutil.rmtree(tmp, ignore_errors=True)
        tmp.mkdir(parents=True)
        tensors = {n: p.detach().contiguous().cpu() for n, p in self.task.trainable().items()}
        save_file(tensors, str(tmp / "trainable.safetensors"))
        torch.save(self.optimizer.state_dict(), tmp / "optimizer.pt")
        state = {
            "step": self.step,
            "skipped": self.skipped,
            "processes": self.world,
            "config": self.task.config_record(),
        }
        state["initial"], state["trainer"] = self.initial, self.task.trainer_state()
        (tmp / "state.json").write_text(json.dumps(state, indent=2))
        for name in ("trainable.safetensors", "optimizer.pt", "state.json"):
            with (tmp / name).open("rb") as fh:
                os.fsync(fh.fileno())

    def _swap_in(self, tmp: Path, final: Path) -> None:
        """Replace the checkpoint by `tmp`; the one it replaces joins the kept history or is removed."""
        old = final.with_name(CHECKPOINT + ".old")
        shutil.rmtree(old, ignore_errors=True)
        if final.exists():
            final.rename(old)
        tmp.rename(final)
        sync_dir(final.parent)
        if old.exists():
            self._retire(old)
        prune_history(self.out, self.task.keep_checkpoints - 1)

    def _retire(self, old: Path) -> None:
        """Move the replaced checkpoint into `checkpoints/step-N` when earlier ones are kept, else remove it."""
        step = saved_step_of(old)
        if self.task.keep_checkpoints > 1 and step is not None and step != self.step:
            target = self.out / HISTORY / f"step-{step:07d}"
            target.parent.mkdir(exist_ok=True)
            shutil.rmtree(target, ignore_errors=True)
            old.rename(target)
        else:
            shutil.rmtree(old, ignore_errors=True)

    def resume(self) -> bool:
        """Continue from the checkpoint, if any (refusing one of a different run); False when there is none."""
        from safetensors.torch import load_file

        ckpt = self._saved_checkpoint()
        if ckpt is not None:
            saved = load_file(str(ckpt / "trainable.safetensors"))
        else:
            legacy = self.task.legacy_checkpoint()
            if legacy is None:
                return False
            ckpt, saved = legacy
            log.warning("%s: continuing from %s, written by the previous release", self.task.name, ckpt)
        state = json.loads((ckpt / "state.json").read_text())
        self._check_same_run(ckpt, self.task.upgrade_saved_config(state["config"]))
        live = self.task.trainable()
        if set(saved) != set(live):
            raise RunError(
                f"{ckpt}: its trainable weights do not match this run's (LoRA targets / freezing changed?); "
                "use a new out directory for a different run, or delete that directory to start over"
            )
        with torch.no_grad():
            for name, p in live.items():
                p.copy_(saved[name].to(p.device, p.dtype))
        self.optimizer.load_state_dict(torch.load(ckpt / "optimizer.pt", map_location="cpu", weights_only=True))
        self.step, self.skipped = state["step"], state.get("skipped", 0)
        if state.get("processes", 1) != self.world:
            log.warning(
                "%s: %s was written by %d process(es), this run has %d: its steps share work differently, so it "
                "will not match an uninterrupted run",
                self.task.name,
                ckpt,
                state.get("processes", 1),
                self.world,
            )
        self.saved_step = self.step if ckpt == self.checkpoint_dir() else None  # a legacy / .old one is rewritten
        self.initial = state["initial"] if "initial" in state else self.task.legacy_initial()
        path = self.out / "log.jsonl"
        kept = truncate_after(path, self.step) if self.main else keyed_rows(read_rows(path), self.step)
        self.rows = kept
        self.task.restore_trainer_state(state.get("trainer", state), kept)  # the previous release: at the top level
        return True

    def _saved_checkpoint(self) -> Path | None:
        """The checkpoint directory in today's format (or its `.old` twin after a kill mid-swap), if any."""
        for ckpt in (self.checkpoint_dir(), self.checkpoint_dir().with_name(CHECKPOINT + ".old")):
            if (ckpt / "state.json").is_file() and (ckpt / "trainable.safetensors").is_file():
                return ckpt
        return None

    def _check_same_run(self, ckpt: Path, saved_config: dict[str, Any]) -> None:
        """Refuse a checkpoint whose identity (the config values that define the run) differs from ours."""
        ours = self.task.identity()
        saved = {k: saved_config.get(k) for k in ours}
        if saved != ours:
            diff = ", ".join(f"{k}={saved[k]!r} (now {ours[k]!r})" for k in ours if saved[k] != ours[k])
            raise RunError(
                f"{ckpt}: saved by a different run ({diff}); use a new out directory / filename_prefix for a "
                "different run, or delete that directory to start over"
            )

    def write_chart(self) -> Path | None:
        """The task's chart panels over its logged steps, as `<out>/chart.png`."""
        return (
            write_chart(self.out / "log.jsonl", self.out / "chart.png", self.task.chart_panels) if self.main else None
        )

    def replica_digests(self) -> list[str]:
        """A digest of the trainable tensors in every process (equal when the replicas are in sync)."""
        digest = hashlib.sha256()
        for name, p in sorted(self.task.trainable().items()):
            digest.update(name.encode())
            digest.update(p.detach().float().cpu().contiguous().numpy().tobytes())
        mine = digest.hexdigest()[:16]
        if self.world == 1:
            return [mine]
        gathered: list[Any] = [None] * self.world
        torch.distributed.all_gather_object(gathered, mine)
        return [str(g) for g in gathered]


def saved_step_of(ckpt: Path) -> int | None:
    """The step a checkpoint directory holds (None when its state cannot be read)."""
    try:
        step = json.loads((ckpt / "state.json").read_text()).get("step")
    except (OSError, ValueError, AttributeError):
        return None
    return step if isinstance(step, int) else None


def history_steps(out: Path) -> list[tuple[int, Path]]:
    """The earlier checkpoints kept in `<out>/checkpoints/step-N` (and the previous release's), oldest first."""
    root = out / HISTORY
    found = []
    for p in root.glob("step-*") if root.is_dir() else []:
        number = p.name[len("step-") :]
        if p.is_dir() and number.isdigit():
            found.append((int(number), p))
    return sorted(found)


def prune_history(out: Path, keep: int) -> None:
    """Remove all but the newest `keep` earlier checkpoints (the history stays bounded)."""
    found = history_steps(out)
    for _, p in found[: max(0, len(found) - keep)]:
        shutil.rmtree(p, ignore_errors=True)
    root = out / HISTORY
    if root.is_dir() and not any(root.iterdir()):
        root.rmdir()


def write_chart(log_path: Path, out: Path, panels: ChartPanels) -> Path | None:
    """A PNG with one panel per (title, log keys) over the steps that logged them; None if nothing is logged."""
    rows = read_rows(log_path)
    drawn = [(title, {k: _series(rows, k) for k in keys}) for title, keys in panels]
    drawn = [(t, {k: v for k, v in s.items() if v}) for t, s in drawn]
    drawn = [(t, s) for t, s in drawn if s]
    if not drawn:
        return None
    line_panels(drawn).save(out)
    return out


def _series(rows: list[dict], key: str) -> list[tuple[int, float]]:
    """(step, value) of every row with a finite number under `key` (dotted keys reach into nested rows)."""
    points = []
    for r in rows:
        value: Any = r
        for part in key.split("."):
            value = value.get(part) if isinstance(value, dict) else None
        if (
            isinstance(value, (int, float))
            and not isinstance(value, bool)
            and value == value
            and abs(value) != float("inf")
        ):
            points.append((r["step"], float(value)))
    return points


def _write_summary(run: Run, summary: dict[str, Any]) -> None:
    """Write `<out>/summary.json` (main process only)."""
    if run.main:
        path = run.out / "summary.json"
        with writing(path, run.kept_state()):
            run.out.mkdir(parents=True, exist_ok=True)
            replace_text(path, json.dumps(summary, indent=2))


def _loop(run: Run, progress: Progress | None, should_stop: Callable[[], bool] | None) -> bool:
    """Steps until the last one or a stop request; True when stopped early."""
    task = run.task
    while run.step < task.steps:
        run.snapshot()
        started = time.perf_counter()
        skipped_before = run.skipped
        metrics = task.train_step(run)
        run.step += 1
        row = {"step": run.step, **metrics, "skipped_updates": run.skipped - skipped_before}
        row["seconds"] = time.perf_counter() - started
        run.rows.append(row)
        run.log(row)
        task.after_step(run, row)
        if progress is not None:
            progress(run.step, task.steps, row)
        if task.save_every and run.step % task.save_every == 0:
            run.save_checkpoint()
        if should_stop is not None and should_stop():
            return run.step < task.steps
    return False


def run_task(
    task: RunTask,
    optimizer: torch.optim.Optimizer,
    progress: Progress | None = None,
    should_stop: Callable[[], bool] | None = None,
    interrupts: tuple[type[BaseException], ...] = (KeyboardInterrupt,),
) -> dict[str, Any]:
    """Train `task` to its last step (resuming from `<out>/checkpoint`), finish it, return the plain-data summary.

    `should_stop()` is asked after every step; it, Ctrl+C (and SIGTERM raised as KeyboardInterrupt) or any of
    `interrupts` (e.g. ComfyUI's Cancel) checkpoint the run at its last finished step and return a summary with
    "interrupted": True; starting the run again continues it.
    """
    run = Run(task, optimizer)
    resumed = run.resume()
    if not resumed:
        if run.main:  # rows of an earlier attempt that never reached a checkpoint start over with the run
            truncate_after(run.out / "log.jsonl", 0)
        run.initial = task.begin()
    initial = run.initial
    _write_summary(run, {**initial, "status": "training"})
    started, start_step = time.perf_counter(), run.step
    try:
        interrupted = _loop(run, progress, should_stop)
    except interrupts:
        interrupted = True
        run.roll_back_unfinished_step()
    elapsed = time.perf_counter() - started
    checkpoint = run.checkpoint_dir() if run.saved_step == run.step else run.save_checkpoint()
    base = {"step": run.step, "resumed": resumed, "checkpoint": str(checkpoint), **initial}
    if interrupted:
        _write_summary(run, {**base, "status": "interrupted"})
        return {**base, "interrupted": True}
    digests = run.replica_digests()
    if len(set(digests)) > 1:
        raise RunError(f"the {run.world} processes ended with different weights ({', '.join(digests)})")
    summary = {"status": "done", **base, **task.finish(run), "skipped_updates": run.skipped, "processes": run.world}
    summary["replica_digests"] = digests
    summary["steps_per_second"] = (run.step - start_step) / elapsed if elapsed > 0 else None
    chart = run.write_chart()
    if chart is not None:
        summary.setdefault("files", {})["chart"] = str(chart)
    _write_summary(run, summary)
    return {**summary, "interrupted": False}
