"""Tiny generator checkpoints (save / load by path, `rewarddance tiny-generator`), loading them wherever a
pipeline path is accepted (load_pipeline, `search --pipeline`, RL configs), and `search --save-candidates`."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image as PILImage

from rewarddance.backend.cli import main
from rewarddance.backend.cli.io import CANDIDATE_FIELDS
from rewarddance.backend.generators.diffusers_adapter import generator_for, load_pipeline
from rewarddance.backend.generators.protocol import seeded_noise
from rewarddance.backend.generators.sampling import sample
from rewarddance.backend.generators.tiny_checkpoint import is_tiny_generator, load_tiny_generator, save_tiny_generator
from rewarddance.backend.generators.tiny_flow import TinyFlowGenerator, TinyVelocityNet, train_tiny_flow
from rewarddance.backend.rewards import ColourReward
from rewarddance.backend.search.algorithms import ALGORITHMS

# 56 x 56 = the tiny reward model's min_pixels, a multiple of its 28-pixel patch grid: neither the file path
# (PIL) nor the tensor path resizes, so re-scoring a saved PNG differs from the search only by 8-bit rounding.
SIZE = 56


def run(args, capsys):
    code = main([str(a) for a in args])
    out = capsys.readouterr()
    return code, out.out, out.err


@pytest.fixture(scope="module")
def gen_dir(tmp_path_factory) -> Path:
    """A tiny generator directory written by the command line (a few training steps: quality is not tested)."""
    out = tmp_path_factory.mktemp("gen") / "tiny-gen"
    assert main(["tiny-generator", "--out", str(out), "--size", str(SIZE), "--steps", "3", "--width", "8"]) == 0
    return out


@pytest.fixture(scope="module")
def rm_dir(tmp_path_factory) -> Path:
    """A tiny qwen2_5_vl reward model written by `rewarddance tiny-model`."""
    out = tmp_path_factory.mktemp("rm") / "tiny-qwen2_5_vl"
    assert main(["tiny-model", "--family", "qwen2_5_vl", "--out", str(out)]) == 0
    return out


def noise_data(size: int) -> torch.Tensor:
    """Training data for generators whose quality does not matter (skips the photo crops)."""
    return torch.rand((64, 3, size, size), generator=torch.Generator().manual_seed(0)) * 2 - 1


def samples(gen: TinyFlowGenerator, seed: int = 3) -> torch.Tensor:
    """Four decoded samples of 4 Euler steps."""
    with torch.no_grad():
        return gen.decode(sample(gen, seeded_noise(gen, 4, seed), 4))


# --- the checkpoint directory --------------------------------------------------------------------------------
@pytest.mark.parametrize("width", [8, 32])
def test_saved_generators_reload_and_sample_bit_identically(width, tmp_path):
    gen = train_tiny_flow(steps=2, size=12, width=width, seed=1, data=noise_data(12))
    path = save_tiny_generator(gen, tmp_path / "g", train_steps=2, seed=1)
    assert path == tmp_path / "g" and sorted(p.name for p in path.iterdir()) == ["config.json", "model.safetensors"]
    config = json.loads((path / "config.json").read_text())
    assert config == {
        "_class_name": "TinyFlowGenerator",
        "size": 12,
        "channels": 3,
        "width": width,
        "train_steps": 2,
        "seed": 1,
    }
    assert is_tiny_generator(path) and is_tiny_generator(str(path))
    loaded = load_tiny_generator(path)
    assert loaded.net.width == width and loaded.noise_shape == (3, 12, 12)
    assert torch.equal(samples(loaded), samples(gen))
    save_tiny_generator(train_tiny_flow(steps=1, size=8, width=4, data=noise_data(8)), path)  # overwrites
    assert load_tiny_generator(path).noise_shape == (3, 8, 8)


def test_metadata_cannot_override_what_the_generator_records(tmp_path):
    with pytest.raises(ValueError, match="metadata key.* size, width are recorded from the generator"):
        save_tiny_generator(TinyFlowGenerator(TinyVelocityNet(width=4), size=8), tmp_path, size=3, width=1)


def test_missing_or_corrupt_directories_name_the_problem(tmp_path):
    good = save_tiny_generator(TinyFlowGenerator(TinyVelocityNet(width=4), size=8), tmp_path / "good")
    cases = {}
    cases["missing"] = (tmp_path / "nope", "does not exist; write one with `rewarddance tiny-generator")
    (tmp_path / "file").write_text("x")
    cases["file"] = (tmp_path / "file", "is not a directory")
    (tmp_path / "empty").mkdir()
    cases["empty"] = (tmp_path / "empty", "has no config.json")
    (tmp_path / "corrupt").mkdir()
    (tmp_path / "corrupt" / "config.json").write_text('{"_class_name": "TinyFlow')
    cases["corrupt"] = (tmp_path / "corrupt", "is not a JSON object")
    (tmp_path / "other").mkdir()
    (tmp_path / "other" / "config.json").write_text('{"_class_name": "UNet2DModel"}')
    cases["other"] = (tmp_path / "other", "describes UNet2DModel, not a TinyFlowGenerator")
    (tmp_path / "nosize").mkdir()
    (tmp_path / "nosize" / "config.json").write_text('{"_class_name": "TinyFlowGenerator", "size": 0}')
    cases["nosize"] = (tmp_path / "nosize", "size must be a positive integer, got 0")
    for name in ("noweights", "truncated", "otherwidth"):
        (tmp_path / name).mkdir()
        (tmp_path / name / "config.json").write_text((good / "config.json").read_text())
    cases["noweights"] = (tmp_path / "noweights", "has no model.safetensors")
    (tmp_path / "truncated" / "model.safetensors").write_bytes((good / "model.safetensors").read_bytes()[:100])
    cases["truncated"] = (tmp_path / "truncated", "does not hold the weights its config.json describes")
    save_tiny_generator(TinyFlowGenerator(TinyVelocityNet(width=8), size=8), tmp_path / "w8")
    (tmp_path / "otherwidth" / "model.safetensors").write_bytes((tmp_path / "w8" / "model.safetensors").read_bytes())
    cases["otherwidth"] = (tmp_path / "otherwidth", r"\(width 4, channels 3\): Error\(s\) in loading state_dict")
    for name, (path, message) in cases.items():
        with pytest.raises(ValueError, match=message):
            load_tiny_generator(path)
        assert is_tiny_generator(path) == (name in ("nosize", "noweights", "truncated", "otherwidth")), name
    assert not is_tiny_generator(None)


# --- rewarddance tiny-generator ------------------------------------------------------------------------------
def test_tiny_generator_command_writes_and_overwrites_a_directory(gen_dir, tmp_path, capsys):
    config = json.loads((gen_dir / "config.json").read_text())
    assert config == {
        "_class_name": "TinyFlowGenerator",
        "size": SIZE,
        "channels": 3,
        "width": 8,
        "train_steps": 3,
        "seed": 0,
        "data": "photo_crops",
    }
    out = tmp_path / "g"
    code, stdout, _ = run(
        ["tiny-generator", "--out", out, "--size", 8, "--steps", 1, "--width", 4, "--seed", 2], capsys
    )
    assert code == 0 and stdout.strip() == str(out)
    code, stdout, _ = run(["tiny-generator", "--out", out, "--size", 12, "--steps", 1, "--width", 4], capsys)
    assert code == 0 and load_tiny_generator(out).noise_shape == (3, 12, 12)  # an existing one is overwritten
    expected = train_tiny_flow(steps=1, size=12, width=4, seed=0)
    assert torch.equal(samples(load_tiny_generator(out)), samples(expected))


def test_tiny_generator_command_checks_flags_before_training(tmp_path, capsys):
    (tmp_path / "busy").mkdir()
    (tmp_path / "busy" / "notes.txt").write_text("keep me")
    (tmp_path / "a-file").write_text("x")
    cases = [
        (["--size", 6], "--size must be at least 8 and a multiple of 4 (e.g. 16), got 6"),
        (["--size", 18], "--size must be at least 8 and a multiple of 4 (e.g. 16), got 18"),
        (["--steps", 0], "--steps must be at least 1, got 0"),
        (["--width", 3], "--width must be at least 4, got 3"),
    ]
    for flags, message in cases:
        code, _, err = run(["tiny-generator", "--out", tmp_path / "new", *flags], capsys)
        assert code == 2 and message in err and "Traceback" not in err
    code, _, err = run(["tiny-generator", "--out", tmp_path / "busy"], capsys)
    assert code == 2 and "is a non-empty directory that is not a tiny generator; pass a new or empty directory" in err
    assert sorted(p.name for p in (tmp_path / "busy").iterdir()) == ["notes.txt"]
    code, _, err = run(["tiny-generator", "--out", tmp_path / "a-file"], capsys)
    assert code == 2 and "is a file; pass a directory" in err
    assert not (tmp_path / "new").exists()


# --- loading by path -----------------------------------------------------------------------------------------
def test_load_pipeline_returns_the_tiny_generator_and_generator_for_passes_it_through(gen_dir, rm_dir):
    gen = load_pipeline(str(gen_dir), "cpu", "fp32")
    assert isinstance(gen, TinyFlowGenerator) and gen.noise_shape == (3, SIZE, SIZE)
    assert generator_for(gen, "a red fox", "blurry") is gen  # unconditional: the prompts are ignored
    for options, given in [({"guidance": 3.0}, "guidance=3.0"), ({"height": 64, "width": 64}, "height=64, width=64")]:
        with pytest.raises(ValueError, match=rf"fixed size \({SIZE}x{SIZE} pixels\) and no guidance.*\(got {given}\)"):
            generator_for(gen, "x", **options)
    with pytest.raises(
        ValueError, match="describes Qwen2_5_VLForConditionalGeneration, not a TinyFlowGenerator.*no model_index"
    ):
        load_pipeline(str(rm_dir))  # a model directory that is no pipeline gets a message, not a diffusers trace


def test_on_candidate_sees_every_history_entry_with_its_image(gen_dir):
    gen = load_tiny_generator(gen_dir)
    for name, algorithm in ALGORITHMS.items():
        seen: list[tuple] = []
        result = algorithm(
            gen, ColourReward(), 4, 24, seed=1, on_candidate=lambda c, im, seen=seen: seen.append((c, im))
        )
        assert [c for c, _ in seen] == result.history and len(seen) >= 1, name
        assert all(im.shape == (SIZE, SIZE, 3) and im.device.type == "cpu" for _, im in seen), name
        best = max(range(len(seen)), key=lambda i: seen[i][0].score)
        assert torch.equal(seen[best][1], result.image[0].cpu()), name
        assert result.score == pytest.approx(float(ColourReward()(seen[best][1][None])[0]), abs=1e-6)


def test_search_saves_every_candidate_and_the_saved_pngs_rescore_to_their_rows(gen_dir, rm_dir, tmp_path, capsys):
    from rewarddance.backend.reward_model import RewardModel
    from rewarddance.backend.rewards import ModelReward

    cands, prompt = tmp_path / "cands", "a red fox in the snow"
    args = ["search", "--pipeline", gen_dir, "--prompt", prompt, "--algorithm", "zero_order", "--budget", 24]
    args += ["--steps", 4, "--seed", 5, "--reward-model", rm_dir, "--device", "cpu", "--out", tmp_path / "best.png"]
    code, stdout, err = run([*args, "--save-candidates", cands, "--json"], capsys)
    assert code == 0, err
    report = json.loads(stdout)
    rows = [json.loads(line) for line in (cands / "candidates.jsonl").read_text().splitlines()]
    assert len(rows) == len(report["history"]) == 6 and report["candidates"] == str(cands)
    assert sorted(p.name for p in cands.iterdir()) == [f"{i:05d}.png" for i in range(6)] + ["candidates.jsonl"]
    for i, (row, entry) in enumerate(zip(rows, report["history"])):
        assert list(row) == list(CANDIDATE_FIELDS)
        assert row["file"] == f"{i:05d}.png" and row["index"] == i
        assert (row["prompt"], row["seed"], row["algorithm"]) == (prompt, 5, "zero_order")
        assert {k: row[k] for k in ("score", "round", "denoiser_calls", "scorer_calls")} == entry
    assert report["score"] == max(row["score"] for row in rows)
    best = max(rows, key=lambda r: r["score"])
    assert np.array_equal(
        np.asarray(PILImage.open(cands / best["file"])), np.asarray(PILImage.open(tmp_path / "best.png"))
    )

    # The JSONL score is that of the float image; the PNG holds it rounded to 8 bits. The same search through the
    # API gives the float images: re-scoring the PNG files equals scoring the rounded images (no resize on either
    # path at 56 x 56), and the rounding itself (each pixel moves <= 1/510) moves this random tiny model's P("yes")
    # (2e-5 .. 5e-4) by at most 2.1% relative, 0.02 in log-odds (measured over the 5 algorithms x 3 seeds at this
    # budget), hence rel=3e-2; the spread of the search's scores is wider (checked below).
    rm = RewardModel.from_pretrained(str(rm_dir), dtype="fp32", device="cpu")
    floats = []
    result = ALGORITHMS["zero_order"](
        load_pipeline(str(gen_dir)),
        ModelReward(rm, prompt),
        4,
        24,
        seed=5,
        on_candidate=lambda c, im: floats.append(im),
    )
    assert [c.score for c in result.history] == [row["score"] for row in rows]
    rescored = rm.score([str(cands / row["file"]) for row in rows], prompt).scores
    rounded = rm.score(torch.stack([(im * 255).round() / 255 for im in floats]), prompt).scores
    assert rescored == pytest.approx(rounded, rel=1e-5)
    assert rescored == pytest.approx([row["score"] for row in rows], rel=3e-2)
    assert rescored != [row["score"] for row in rows]  # 8-bit rounding is measurable, not nothing
    assert max(r["score"] for r in rows) > 1.03 * min(r["score"] for r in rows)  # the tolerance tells them apart


def test_save_candidates_must_be_a_new_directory_checked_before_loading(gen_dir, tmp_path, capsys):
    (tmp_path / "busy").mkdir()
    (tmp_path / "busy" / "00000.png").write_bytes(b"")
    (tmp_path / "a-file").write_text("x")
    base = ["search", "--pipeline", tmp_path / "no-such-pipeline", "--prompt", "x", "--budget", 8, "--steps", 4]
    code, _, err = run([*base, "--save-candidates", tmp_path / "busy"], capsys)
    assert code == 2 and "--save-candidates" in err and "is not empty; pass a new directory" in err
    code, _, err = run([*base, "--save-candidates", tmp_path / "a-file"], capsys)
    assert code == 2 and "is a file; pass a new directory" in err
    (tmp_path / "empty").mkdir()
    code, _, err = run(
        ["search", "--pipeline", gen_dir, "--prompt", "x", "--guidance", 4, "--save-candidates", tmp_path / "empty"],
        capsys,
    )
    assert code == 2 and "--pipeline: the tiny generator has a fixed size" in err and "leave guidance unset" in err
    assert not any((tmp_path / "empty").iterdir())


# --- RL configs ----------------------------------------------------------------------------------------------
def test_rl_configs_take_a_tiny_generator_directory_by_path(gen_dir, tmp_path):
    pytest.importorskip("peft")
    import shutil

    from safetensors.torch import save_file

    from rewarddance.backend.rl.config import RLConfig, build_policy, load_rl_config

    shutil.copytree(gen_dir, tmp_path / "gen")
    old = train_tiny_flow(steps=1, size=8, width=8, data=noise_data(8))
    save_file({k: v.contiguous() for k, v in old.net.state_dict().items()}, str(tmp_path / "old.safetensors"))
    head = 'algorithm = "raft"\nout = "run"\nprompts = ["a red fox"]\nlora_rank = 2\nlora_alpha = 4\n'
    expected = samples(load_tiny_generator(gen_dir))
    for line in [
        'generator = "gen"',
        'generator = { kind = "tiny", path = "gen" }',
        'generator = { kind = "diffusers", path = "gen" }',
    ]:
        (tmp_path / "run.toml").write_text(head + line + "\n")
        cfg = load_rl_config(tmp_path / "run.toml")
        assert cfg.generator["path"] == str(tmp_path / "gen"), line
        assert line.endswith("}") or cfg.generator == {"kind": "tiny", "path": str(tmp_path / "gen")}
        policy, base = build_policy(cfg)
        assert isinstance(base, TinyFlowGenerator) and policy.generator_for("any prompt") is base
        with torch.no_grad():  # the LoRA starts at zero: the policy samples what the saved generator samples
            assert torch.equal(samples(base), expected), line
    (tmp_path / "run.toml").write_text(head + 'generator = { kind = "tiny", path = "old.safetensors", size = 8 }\n')
    _, base = build_policy(load_rl_config(tmp_path / "run.toml"))  # the single-file form keeps working
    assert base.net.width == 8 and torch.equal(samples(base), samples(old))
    assert RLConfig(algorithm="raft", out="o", prompts=["a"], generator="org/some-pipeline").generator == {
        "kind": "diffusers",
        "path": "org/some-pipeline",
    }
    bad = RLConfig(
        algorithm="raft",
        out=str(tmp_path / "o"),
        prompts=["a"],
        generator={"kind": "tiny", "path": str(gen_dir), "guidance": 4.0},
    )
    with pytest.raises(ValueError, match=r"generator: the tiny generator has a fixed size .*\(got guidance=4.0\)"):
        build_policy(bad.validate())
    with pytest.raises(ValueError, match="generator must be a table {kind, path, ...} or a path string, got 5"):
        RLConfig(algorithm="raft", out="o", prompts=["a"], generator=5).validate()
