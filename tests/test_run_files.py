"""Issue 16 (items 7, 11): a trainer's files survive crashes. A torn last line of log.jsonl is repaired on resume,
the rewrite is atomic (a SIGKILL in the middle of it loses nothing), rows are keyed by step (no duplicates after
a restart), a full disk while writing a checkpoint, a log row or the summary is one message naming the path with
the previous checkpoint intact, and `keep_checkpoints` bounds the checkpoints kept."""

from __future__ import annotations

import errno
import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest
import torch

pytest.importorskip("peft")

from test_runs import LineFit, optimizer  # noqa: E402

from rewarddance.backend import run_log  # noqa: E402
from rewarddance.backend.run_log import WriteError, keyed_rows, read_jsonl, truncate_after  # noqa: E402
from rewarddance.backend.runs import Run, run_task  # noqa: E402


def log_steps(out: Path) -> list[int]:
    """The steps of a run's training rows, in file order (every line must be whole JSON)."""
    return [json.loads(line)["step"] for line in (out / "log.jsonl").read_text().splitlines()]


def run(out: Path, steps: int, save_every: int = 2, keep: int = 1) -> dict:
    task = LineFit(out, steps=steps)
    task.save_every, task.keep_checkpoints = save_every, keep
    return run_task(task, optimizer(task))


def straight_weight(tmp_path: Path, steps: int) -> float:
    task = LineFit(tmp_path / "straight", steps=steps)
    run_task(task, optimizer(task))
    return float(task.w)


def checkpoint_step(out: Path) -> int:
    return json.loads((out / "checkpoint" / "state.json").read_text())["step"]


# --- torn tails, atomic rewrites, rows keyed by step -------------------------------------------------------------
@pytest.mark.parametrize(
    "tail",
    [
        b'{"step": 3, "loss": 1.9',  # a crash mid-write
        b'{"step": 3, "loss": 1.9}',  # the newline itself was lost: never trusted either
        b'{"step": 3, "loss": 1.9\x00\x00\x00\x00',  # a filesystem's zero-filled tail
        b'{"step": 3, "name": "\xc3',  # cut inside a UTF-8 character
        b"[3]\n",  # a line that is JSON but not a row
    ],
)
def test_a_torn_last_log_line_is_repaired_on_resume(tmp_path, tail):
    out = tmp_path / "run"
    run(out, steps=2)
    with (out / "log.jsonl").open("ab") as fh:
        fh.write(tail)
    summary = run(out, steps=4)
    assert summary["resumed"] and summary["step"] == 4
    assert log_steps(out) == [1, 2, 3, 4]  # the torn row is gone and the next row was not glued onto it
    assert not list(out.glob(".*.tmp"))


def test_a_failed_log_rewrite_leaves_the_old_file_intact(tmp_path, monkeypatch):
    log = tmp_path / "log.jsonl"
    original = b'{"step": 1}\n{"step": 2}\n{"step": 3}\n{"step": 4, "lo'
    log.write_bytes(original)

    def fail_midway(fd):
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(run_log.os, "fsync", fail_midway)  # the temporary file is written, not yet renamed
    with pytest.raises(WriteError, match="log.jsonl': no space left on device; the log is unchanged"):
        truncate_after(log, 2)
    assert log.read_bytes() == original and sorted(p.name for p in tmp_path.iterdir()) == ["log.jsonl"]


def test_sigkill_during_the_log_rewrite_loses_no_row(tmp_path):
    """A real SIGKILL between writing the temporary file and renaming it: the log keeps every row, and the next
    resume repairs it."""
    out = tmp_path / "run"
    run(out, steps=4)
    log = out / "log.jsonl"
    with log.open("a") as fh:
        fh.write('{"step": 5, "loss": 1.0}\n{"step": 6, "lo')  # rows a crashed run logged after its checkpoint
    before = log.read_bytes()
    script = (
        "import os, signal, sys\n"
        "from pathlib import Path\n"
        "from rewarddance.backend import run_log\n"
        "run_log.os.replace = lambda a, b: os.kill(os.getpid(), signal.SIGKILL)\n"
        "run_log.truncate_after(Path(sys.argv[1]), 4)\n"
    )
    killed = subprocess.run([sys.executable, "-c", script, str(log)], timeout=60)
    assert killed.returncode == -signal.SIGKILL
    assert log.read_bytes() == before  # nothing lost: the old file is whole
    summary = run(out, steps=6)
    assert summary["resumed"] and log_steps(out) == [1, 2, 3, 4, 5, 6]


def test_a_restart_never_duplicates_steps(tmp_path):
    """Rows of an attempt logged twice (restarts before a checkpoint, or an older release) are kept once per
    step: the last written one."""
    out = tmp_path / "run"
    run(out, steps=2)
    log = out / "log.jsonl"
    rows = [json.loads(line) for line in log.read_text().splitlines()]
    stale = [{**r, "loss": 99.0} for r in rows]
    log.write_text("".join(json.dumps(r) + "\n" for r in stale + rows + [{"step": 3, "loss": 5.0}]))
    summary = run(out, steps=4)
    assert summary["resumed"] and log_steps(out) == [1, 2, 3, 4]
    kept = [json.loads(line) for line in log.read_text().splitlines()]
    assert kept[:2] == rows  # the rows of the run that wrote the checkpoint, not the stale ones


def test_a_restart_before_the_first_checkpoint_logs_each_step_once(tmp_path):
    out = tmp_path / "run"
    first = LineFit(out, steps=4)
    first.save_every = 0
    calls = iter([False, False, True])

    def crash() -> bool:  # a crash after step 3, before any checkpoint (should_stop would checkpoint)
        if next(calls):
            raise SystemExit("killed")
        return False

    with pytest.raises(SystemExit):
        run_task(first, optimizer(first), should_stop=crash)
    assert log_steps(out) == [1, 2, 3] and not (out / "checkpoint").exists()
    summary = run(out, steps=4, save_every=0)
    assert not summary["resumed"] and log_steps(out) == [1, 2, 3, 4]


def test_keyed_rows_keep_one_row_per_step_and_kind():
    rows = [
        {"step": 1, "loss": 9.0},
        {"step": 2, "loss": 8.0},
        {"step": 2, "eval": {"acc": 0.1}},
        {"step": 1, "loss": 1.0},
        {"step": 2, "loss": 2.0},
        {"step": 3, "loss": 3.0},
        {"loss": 4.0},
        {"step": "2"},
        {"step": True},
    ]
    assert keyed_rows(rows, 2) == [
        {"step": 1, "loss": 1.0},
        {"step": 2, "eval": {"acc": 0.1}},
        {"step": 2, "loss": 2.0},
    ]


def test_read_jsonl_counts_what_it_drops(tmp_path):
    path = tmp_path / "x.jsonl"
    path.write_bytes(b'{"a": 1}\n\n{oops\n"text"\n{"b": 2}\r\n{"c": 3')
    assert read_jsonl(path) == ([{"a": 1}, {"b": 2}], 3)
    assert read_jsonl(tmp_path / "none.jsonl") == ([], 0)


# --- a full disk --------------------------------------------------------------------------------------------------
def no_space(*args, **kwargs):
    raise OSError(errno.ENOSPC, "No space left on device")


def test_disk_full_while_checkpointing_keeps_the_previous_checkpoint(tmp_path, monkeypatch):
    out = tmp_path / "run"
    real_save = torch.save
    saves = []

    def full_on_second(obj, f, *args, **kwargs):
        saves.append(f)
        if len(saves) == 2:
            Path(f).write_bytes(b"half")  # part of the file made it before the disk filled up
            no_space()
        return real_save(obj, f, *args, **kwargs)

    monkeypatch.setattr("rewarddance.backend.runs.torch.save", full_on_second)
    with pytest.raises(WriteError) as info:
        run(out, steps=6)
    message = str(info.value)
    assert "checkpoint.tmp" in message and "no space left on device" in message
    assert "the checkpoint of step 2 is kept" in message and "\n" not in message
    assert checkpoint_step(out) == 2 and not (out / "checkpoint.tmp").exists()
    assert sorted(p.name for p in (out / "checkpoint").iterdir()) == [
        "optimizer.pt",
        "state.json",
        "trainable.safetensors",
    ]
    monkeypatch.setattr("rewarddance.backend.runs.torch.save", real_save)  # space was freed
    summary = run(out, steps=6)
    assert summary["resumed"] and summary["step"] == 6 and log_steps(out) == [1, 2, 3, 4, 5, 6]
    task = LineFit(out, steps=6)
    Run(task, optimizer(task)).resume()
    assert float(task.w) == pytest.approx(straight_weight(tmp_path, 6), abs=1e-7)


def test_disk_full_while_logging_names_the_log_and_resumes(tmp_path, monkeypatch):
    out = tmp_path / "run"
    run(out, steps=2)
    real_append = run_log.append_text

    def torn_append(path, text):
        real_append(path, text[:7])  # a cut-short line, then the error
        no_space()

    monkeypatch.setattr(run_log, "append_text", torn_append)
    with pytest.raises(WriteError, match=r"log.jsonl': no space left on device; the checkpoint of step 2 is kept"):
        run(out, steps=4)
    monkeypatch.setattr(run_log, "append_text", real_append)
    assert run(out, steps=4)["step"] == 4 and log_steps(out) == [1, 2, 3, 4]


def test_disk_full_while_writing_the_summary_keeps_the_old_one(tmp_path, monkeypatch):
    out = tmp_path / "run"
    run(out, steps=2)
    before = (out / "summary.json").read_text()
    monkeypatch.setattr(run_log.os, "fsync", no_space)
    with pytest.raises(WriteError, match="summary.json': no space left on device"):
        run(out, steps=4)
    assert (out / "summary.json").read_text() == before and not list(out.glob(".*.tmp"))


# --- how many checkpoints are kept --------------------------------------------------------------------------------
def test_keep_checkpoints_bounds_the_history(tmp_path):
    out = tmp_path / "run"
    run(out, steps=10, save_every=2, keep=3)
    assert checkpoint_step(out) == 10
    assert sorted(p.name for p in (out / "checkpoints").iterdir()) == ["step-0000006", "step-0000008"]
    assert json.loads((out / "checkpoints" / "step-0000008" / "state.json").read_text())["step"] == 8
    one = tmp_path / "one"
    run(one, steps=6, save_every=2)
    assert sorted(p.name for p in one.iterdir()) == ["chart.png", "checkpoint", "log.jsonl", "summary.json"]


def test_keeping_fewer_checkpoints_prunes_older_ones_on_the_next_save(tmp_path):
    out = tmp_path / "run"
    run(out, steps=6, save_every=2, keep=4)
    assert len(list((out / "checkpoints").iterdir())) == 2
    run(out, steps=8, save_every=2, keep=2)
    assert [p.name for p in (out / "checkpoints").iterdir()] == ["step-0000006"]
    run(out, steps=10, save_every=2, keep=1)
    assert not (out / "checkpoints").exists() and checkpoint_step(out) == 10


def test_train_rm_keep_checkpoints_is_validated(tiny_dirs):
    from rewarddance.backend.training.trainer import RMTrainConfig

    base = dict(model=str(tiny_dirs["qwen2_5_vl"]), pairs="p.jsonl", out="o")
    assert RMTrainConfig(**base).keep_checkpoints == 1
    with pytest.raises(ValueError, match="keep_checkpoints must be a positive integer, got 0"):
        RMTrainConfig(**base, keep_checkpoints=0).validate()


# --- the command line: one line, exit 2, state kept ---------------------------------------------------------------
def test_train_rm_disk_full_is_one_line_and_exit_2(tiny_dirs, tmp_path, monkeypatch, capsys):
    from rewarddance.backend.cli import main
    from rewarddance.backend.training.synthetic import make_synthetic_pairs

    make_synthetic_pairs(tmp_path / "data", n=8, size=32, seed=0)
    config = tmp_path / "rm.toml"
    config.write_text(
        f'model = "{tiny_dirs["qwen2_5_vl"]}"\npairs = "data/pairs.jsonl"\nout = "out"\nlora_rank = 4\n'
        "lora_alpha = 8\nsteps = 4\nbatch_size = 2\nsave_every = 2\nkeep_checkpoints = 2\neval_fraction = 0.25\n"
        'dtype = "fp32"\ndevice = "cpu"\n'
    )
    real_save, saves = torch.save, []

    def full_on_second(obj, f, *args, **kwargs):
        saves.append(f)
        if len(saves) == 2:
            no_space()
        return real_save(obj, f, *args, **kwargs)

    monkeypatch.setattr("rewarddance.backend.runs.torch.save", full_on_second)
    assert main(["train-rm", "--config", str(config), "--quiet"]) == 2
    err = capsys.readouterr().err
    lines = [line for line in err.splitlines() if line.startswith("rewarddance")]
    assert len(lines) == 1 and lines[0].startswith("rewarddance: error: cannot write")
    assert "no space left on device" in err and "checkpoint.tmp" in err
    assert "Traceback" not in err and "the checkpoint of step 2 is kept" in err
    assert checkpoint_step(tmp_path / "out") == 2 and not (tmp_path / "out" / "checkpoint.tmp").exists()
    monkeypatch.setattr("rewarddance.backend.runs.torch.save", real_save)
    assert main(["train-rm", "--config", str(config), "--quiet"]) == 0
    capsys.readouterr()
    assert log_steps(tmp_path / "out")[:4] == [1, 2, 3, 4] and checkpoint_step(tmp_path / "out") == 4
    assert [p.name for p in (tmp_path / "out" / "checkpoints").iterdir()] == ["step-0000002"]
    assert os.path.isdir(tmp_path / "out" / "model")
