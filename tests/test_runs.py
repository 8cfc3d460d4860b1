"""The shared run runtime (backend/runs.py), and one set of kill -9 / resume / multi-process tests that covers
both trainers through their command lines: `rewarddance train` (RL on the tiny flow model) and `rewarddance
train-rm` (a tiny Qwen2.5-VL judge)."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

pytest.importorskip("peft")

from rewarddance.backend.runs import Run, RunError, RunTask, renamed_keys, run_task  # noqa: E402


# --- the runtime on a toy task ------------------------------------------------------------------------------------
class LineFit(RunTask):
    """Fit y = 3x with one weight; `bad_steps` get a NaN loss; `cut` raises mid-step after the update."""

    chart_panels = [("loss", ["loss"])]

    def __init__(self, out: Path, steps: int = 5, seed: int = 0, bad_steps=(), cut: int | None = None):
        self.out, self.steps, self.seed, self.bad_steps, self.cut = out, steps, seed, set(bad_steps), cut
        self.w = torch.nn.Parameter(torch.zeros(1))
        self.snapshot_each_step = True

    def trainable(self):
        return {"w": self.w}

    def config_record(self):
        return {"seed": self.seed, "steps": self.steps}

    def identity(self):
        return {"seed": self.seed}

    def begin(self):
        return {"w_before": float(self.w)}

    def train_step(self, run: Run):
        x = torch.tensor([1.0, 2.0])
        loss = ((self.w * x - 3 * x) ** 2).mean()
        if run.step + 1 in self.bad_steps:
            loss = loss * float("nan")
        run.backward(loss)
        run.optimizer_step()
        if self.cut == run.step + 1:
            raise KeyboardInterrupt  # the update of this step was applied: it must be rolled back
        return {"loss": float(loss)}

    def finish(self, run: Run):
        return {"w_after": float(self.w)}


def optimizer(task: LineFit) -> torch.optim.Optimizer:
    return torch.optim.SGD([task.w], lr=0.1)


def test_runtime_trains_logs_charts_and_writes_a_plain_summary(tmp_path):
    task = LineFit(tmp_path / "run")
    summary = run_task(task, optimizer(task))
    assert summary["step"] == 5 and not summary["interrupted"] and summary["processes"] == 1
    assert summary["w_before"] == 0.0 and summary["w_after"] == pytest.approx(float(task.w))
    assert json.loads(json.dumps(summary)) == summary  # plain data
    rows = [json.loads(line) for line in (tmp_path / "run" / "log.jsonl").read_text().splitlines()]
    assert [r["step"] for r in rows] == [1, 2, 3, 4, 5] and rows[-1]["loss"] < rows[0]["loss"]
    assert (tmp_path / "run" / "chart.png").stat().st_size > 500
    assert json.loads((tmp_path / "run" / "summary.json").read_text())["w_after"] == summary["w_after"]


def test_runtime_skips_a_non_finite_update_and_counts_it(tmp_path, caplog):
    task = LineFit(tmp_path / "run", steps=3, bad_steps=[2])
    straight = LineFit(tmp_path / "straight", steps=2)
    run_task(straight, optimizer(straight))
    summary = run_task(task, optimizer(task))
    assert summary["skipped_updates"] == 1 and "step 2: non-finite loss" in caplog.text
    assert float(task.w) == pytest.approx(float(straight.w))  # 3 steps with one skipped = 2 real updates
    rows = [json.loads(line) for line in (tmp_path / "run" / "log.jsonl").read_text().splitlines()]
    assert [r["skipped_updates"] for r in rows] == [0, 1, 0]


def test_runtime_rolls_back_a_cut_short_step_and_resumes_to_the_same_weights(tmp_path):
    straight = LineFit(tmp_path / "straight")
    run_task(straight, optimizer(straight))
    cut = LineFit(tmp_path / "run", cut=3)
    first = run_task(cut, optimizer(cut))
    assert first["interrupted"] and first["step"] == 2
    after_two = LineFit(tmp_path / "two", steps=2)
    run_task(after_two, optimizer(after_two))
    assert float(cut.w) == float(after_two.w)  # step 3's applied update was rolled back
    again = LineFit(tmp_path / "run")
    done = run_task(again, optimizer(again))
    assert done["resumed"] and done["step"] == 5 and done["w_before"] == 0.0
    assert float(again.w) == pytest.approx(float(straight.w), abs=1e-7)


def test_runtime_refuses_a_checkpoint_of_another_run_and_reads_a_half_swapped_one(tmp_path):
    task = LineFit(tmp_path / "run", steps=2)
    run_task(task, optimizer(task))
    with pytest.raises(RunError, match=r"saved by a different run \(seed=0 \(now 1\)\)"):
        other = LineFit(tmp_path / "run", steps=3, seed=1)
        run_task(other, optimizer(other))
    ckpt = tmp_path / "run" / "checkpoint"
    ckpt.rename(ckpt.with_name("checkpoint.old"))  # as if killed between the two renames of a save
    more = LineFit(tmp_path / "run", steps=3)
    assert run_task(more, optimizer(more))["resumed"]


def test_should_stop_checkpoints_and_the_same_call_continues(tmp_path):
    task = LineFit(tmp_path / "run")
    calls = iter([False, True])
    first = run_task(task, optimizer(task), should_stop=lambda: next(calls))
    assert first["interrupted"] and first["step"] == 2 and first["checkpoint"].endswith("checkpoint")
    state = json.loads((tmp_path / "run" / "checkpoint" / "state.json").read_text())
    assert state["step"] == 2 and state["initial"] == {"w_before": 0.0}


def test_renamed_keys_warn_and_refuse_both_spellings(caplog):
    assert renamed_keys({"lr": 0.1, "steps": 2}, {"lr": "learning_rate"}, "run.toml") == {
        "steps": 2,
        "learning_rate": 0.1,
    }
    assert "run.toml: 'lr' is deprecated" in caplog.text and "use 'learning_rate'" in caplog.text
    with pytest.raises(ValueError, match="both 'lr' \\(deprecated\\) and 'learning_rate'"):
        renamed_keys({"lr": 0.1, "learning_rate": 0.2}, {"lr": "learning_rate"}, "run.toml")


def test_rl_config_accepts_the_old_key_names_for_one_release(tmp_path, caplog):
    from rewarddance.backend.rl.config import RLConfig, load_rl_config

    path = tmp_path / "old.toml"
    path.write_text('algorithm = "raft"\nout = "o"\nprompts = ["a"]\nlr = 0.002\nrank = 8\nalpha = 4\n')
    cfg = load_rl_config(path)
    assert (cfg.learning_rate, cfg.lora_rank, cfg.lora_alpha) == (0.002, 8, 4)
    assert "'rank' is deprecated" in caplog.text and "use 'lora_rank'" in caplog.text
    assert RLConfig(algorithm="raft", out="o", prompts=["a"], lr=0.005).learning_rate == 0.005
    assert "lr" not in RLConfig(algorithm="raft", out="o", prompts=["a"]).to_dict()


# --- both trainers from the command line --------------------------------------------------------------------------
@pytest.fixture(scope="module")
def workdirs(tmp_path_factory, tiny_dirs):
    """A folder with a tiny judge, a small pair set, a tiny flow base model and one config per trainer."""
    from safetensors.torch import save_file

    from rewarddance.backend.generators.tiny_flow import train_tiny_flow
    from rewarddance.backend.training.synthetic import make_synthetic_pairs

    root = tmp_path_factory.mktemp("runs")
    make_synthetic_pairs(root / "data", n=16, size=48, seed=0)
    gen = train_tiny_flow(steps=60, seed=0)
    save_file({k: v.contiguous() for k, v in gen.net.state_dict().items()}, str(root / "flow.safetensors"))
    shutil.copytree(tiny_dirs["qwen2_5_vl"], root / "judge")
    return root


def write_config(root: Path, trainer: str, steps: int, save_every: int) -> Path:
    """The config file of a small run of `trainer` ("train" or "train-rm") with output `out`."""
    if trainer == "train":
        text = f"""algorithm = "raft"
out = "out"
prompts = ["a red picture", "a red square"]
steps = {steps}
learning_rate = 0.001
lora_rank = 4
lora_alpha = 8
prompts_per_step = 1
eval_seeds = 2
save_every = {save_every}
generator = {{ kind = "tiny", path = "{root.parent / "flow.safetensors"}" }}
trainer = {{ group_size = 4, sample_steps = 4, raft_updates = 2 }}
"""
    else:
        text = f"""model = "{root.parent / "judge"}"
pairs = "{root.parent / "data" / "pairs.jsonl"}"
out = "out"
lora = true
lora_rank = 4
lora_alpha = 8
learning_rate = 0.001
steps = {steps}
batch_size = 4
save_every = {save_every}
eval_fraction = 0.25
dtype = "fp32"
device = "cpu"
"""
    root.mkdir(parents=True, exist_ok=True)
    path = root / f"{trainer}.toml"
    path.write_text(text)
    return path


def final_weights(out: Path) -> dict[str, torch.Tensor]:
    """The trainable weights of a finished run's last checkpoint."""
    from safetensors.torch import load_file

    return load_file(str(out / "checkpoint" / "trainable.safetensors"))


@pytest.mark.parametrize("trainer", ["train", "train-rm"])
def test_kill_minus_9_then_resume_ends_with_all_steps_and_the_same_weights(trainer, workdirs, tmp_path):
    """SIGKILL mid-run, then the same command: it continues from the last checkpoint, logs each step once and
    ends with the weights of a run that was never killed."""
    steps = 8
    env = dict(os.environ, PYTHONUNBUFFERED="1")
    straight = write_config(workdirs / f"straight-{trainer}", trainer, steps, save_every=2)
    cmd = [sys.executable, "-m", "rewarddance", trainer, "--quiet"]
    done = subprocess.run([*cmd, "--config", str(straight)], capture_output=True, text=True, env=env, timeout=300)
    assert done.returncode == 0, done.stderr
    killed = write_config(workdirs / f"killed-{trainer}", trainer, steps, save_every=2)
    proc = subprocess.Popen([*cmd, "--config", str(killed)], stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=env)
    log = killed.parent / "out" / "log.jsonl"
    deadline = time.time() + 120
    while time.time() < deadline and len(log.read_text().splitlines() if log.is_file() else []) < 3:
        time.sleep(0.02)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    assert proc.returncode == -signal.SIGKILL
    state = json.loads((killed.parent / "out" / "checkpoint" / "state.json").read_text())
    assert 2 <= state["step"] < steps and state["step"] % 2 == 0
    again = subprocess.run([*cmd, "--config", str(killed)], capture_output=True, text=True, env=env, timeout=300)
    assert again.returncode == 0, again.stderr
    summary = json.loads((killed.parent / "out" / "summary.json").read_text())
    assert summary["step"] == steps and summary["resumed"] is True and summary["status"] == "done"
    rows = [json.loads(line) for line in log.read_text().splitlines()]
    assert [r["step"] for r in rows if "seconds" in r] == list(range(1, steps + 1))
    a, b = final_weights(straight.parent / "out"), final_weights(killed.parent / "out")
    assert a.keys() == b.keys() and all(torch.allclose(a[k], b[k], atol=1e-6) for k in a)


@pytest.mark.skipif(shutil.which("accelerate") is None, reason="accelerate's launcher is not on PATH")
@pytest.mark.parametrize("trainer", ["train", "train-rm"])
def test_two_processes_under_accelerate_end_with_identical_weights(trainer, workdirs):
    """`accelerate launch` with 2 CPU processes (torchrun + gloo): gradients are averaged, one process writes,
    and the two replicas end with the same weights (their digests are gathered into the summary)."""
    cfg = write_config(workdirs / f"accelerate-{trainer}", trainer, steps=2, save_every=1)
    launch = [shutil.which("accelerate"), "launch", "--multi_gpu", "--num_processes", "2", "--num_machines", "1"]
    launch += ["--mixed_precision", "no", "--dynamo_backend", "no", "-m", "rewarddance", trainer]
    env = dict(os.environ, OMP_NUM_THREADS="1", CUDA_VISIBLE_DEVICES="")
    done = subprocess.run(
        [*launch, "--config", str(cfg), "--accelerate", "--quiet"], capture_output=True, text=True, env=env, timeout=300
    )
    assert done.returncode == 0, done.stderr[-3000:]
    summary = json.loads((cfg.parent / "out" / "summary.json").read_text())
    assert summary["processes"] == 2 and summary["step"] == 2
    assert len(summary["replica_digests"]) == 2 and len(set(summary["replica_digests"])) == 1
    rows = [json.loads(line) for line in (cfg.parent / "out" / "log.jsonl").read_text().splitlines()]
    assert [r["step"] for r in rows if "seconds" in r] == [1, 2]  # only the main process logs


def test_bad_lora_and_gradient_settings_name_the_key(tiny_dirs, tmp_path):
    from rewarddance.backend.rl.config import RLConfig
    from rewarddance.backend.training.trainer import RMTrainConfig

    base = dict(algorithm="raft", out="o", prompts=["a"])
    with pytest.raises(ValueError, match="lora_rank must be a positive integer, got 0"):
        RLConfig(**base, lora_rank=0).validate()
    with pytest.raises(ValueError, match="lora_alpha must be a positive number, got -1"):
        RLConfig(**base, lora_alpha=-1).validate()
    with pytest.raises(ValueError, match="max_grad_norm must be a positive number, got 0"):
        RMTrainConfig(model=str(tiny_dirs["qwen2_5_vl"]), pairs="p.jsonl", out="o", max_grad_norm=0).validate()


def test_a_fresh_start_drops_rows_of_an_attempt_that_never_checkpointed(tmp_path):
    log = tmp_path / "run" / "log.jsonl"
    log.parent.mkdir()
    log.write_text("".join(json.dumps({"step": s, "loss": 9.0}) + "\n" for s in (1, 2, 3)) + '{"step": 4, "lo')
    task = LineFit(tmp_path / "run", steps=2)
    run_task(task, optimizer(task))
    assert [json.loads(line)["step"] for line in log.read_text().splitlines()] == [1, 2]


def test_an_interrupted_summary_says_so_and_the_last_checkpoint_is_written_once(tmp_path, monkeypatch):
    saves: list[int] = []
    original = Run.save_checkpoint

    def counting(self):
        saves.append(self.step)
        return original(self)

    monkeypatch.setattr(Run, "save_checkpoint", counting)
    task = LineFit(tmp_path / "run", steps=4)
    task.save_every = 2
    run_task(task, optimizer(task))
    assert saves == [2, 4]  # the end of the run does not write step 4 again
    cut = LineFit(tmp_path / "cut", cut=2)
    run_task(cut, optimizer(cut))
    assert json.loads((tmp_path / "cut" / "summary.json").read_text())["status"] == "interrupted"


def test_run_log_skips_a_cut_line_and_rewrites_atomically(tmp_path):
    from rewarddance.backend.run_log import read_rows, truncate_after

    log = tmp_path / "log.jsonl"
    log.write_text('{"step": 1}\n{"step": 2}\n{"step": 3, "lo')
    assert read_rows(log) == [{"step": 1}, {"step": 2}]
    assert truncate_after(log, 1) == [{"step": 1}] and read_rows(log) == [{"step": 1}]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["log.jsonl"]
