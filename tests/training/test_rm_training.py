"""Reward-model training: data validation, objectives on the scorer's prompts, learning, export, resume, CLI."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from helpers import random_image

from rewarddance.backend.training.data import DataError, PreferencePair, load_pairs, split_pairs, write_pairs
from rewarddance.backend.training.synthetic import make_synthetic_pairs
from rewarddance.backend.training.trainer import (
    RewardModelTraining,
    RMTrainConfig,
    load_train_config,
    train_reward_model,
)


@pytest.fixture(scope="module")
def synthetic(tmp_path_factory):
    """100 synthetic pairs (real photo crops vs edited copies), 112 px."""
    return make_synthetic_pairs(tmp_path_factory.mktemp("pairs"), n=100, size=112, seed=0)


def config(tiny_dirs, pairs, out, **kw) -> RMTrainConfig:
    base = dict(
        model=str(tiny_dirs["qwen2_5_vl"]),
        pairs=str(pairs),
        out=str(out),
        lora=False,
        freeze_vision=False,
        learning_rate=1e-3,
        steps=4,
        batch_size=4,
        save_every=0,
        eval_fraction=0.2,
        dtype="fp32",
        device="cpu",
    )
    return RMTrainConfig(**{**base, **kw})


# --- data -----------------------------------------------------------------------------------------------------------
@pytest.fixture
def two_images(tmp_path):
    a, b = tmp_path / "a.png", tmp_path / "b.png"
    random_image(16, 16, seed=1).save(a)
    random_image(16, 16, seed=2).save(b)
    return tmp_path


@pytest.mark.parametrize(
    "line,word",
    [
        ("{not json", "invalid JSON"),
        ('["a"]', "JSON object"),
        ('{"prompt": "x", "chosen": "a.png"}', "'rejected' is required"),
        ('{"prompt": "", "chosen": "a.png", "rejected": "b.png"}', "'prompt' is required"),
        ('{"prompt": "x", "chosen": "a.png", "rejected": "missing.png"}', "does not exist"),
        ('{"prompt": "x", "chosen": "a.png", "rejected": "a.png"}', "same file"),
        ('{"prompt": "x", "chosen": "a.png", "rejected": "b.png", "winner": 1}', "unknown field"),
        ('{"prompt": "x", "chosen": "a.png", "rejected": "b.png", "tie": "no"}', "'tie' must be"),
        ('{"prompt": "x", "chosen": "a.png", "rejected": "pairs.jsonl"}', "not an image or video"),
    ],
)
def test_bad_rows_name_the_line(two_images, line, word):
    path = two_images / "pairs.jsonl"
    path.write_text('{"prompt": "ok", "chosen": "a.png", "rejected": "b.png"}\n' + line + "\n")
    with pytest.raises(DataError, match=word) as err:
        load_pairs(path)
    assert "pairs.jsonl line 2" in str(err.value)


def test_duplicates_folders_and_split(two_images):
    path = two_images / "pairs.jsonl"
    row = '{"prompt": "x", "chosen": "a.png", "rejected": "b.png"}\n'
    path.write_text(row + '{"prompt": "x", "chosen": "b.png", "rejected": "a.png"}\n')
    with pytest.raises(DataError, match="repeats pair 1"):
        load_pairs(path)
    folder = two_images / "folder" / "pair1"
    folder.mkdir(parents=True)
    random_image(8, 8).save(folder / "chosen.png")
    random_image(8, 8, seed=3).save(folder / "rejected.jpg")
    (folder / "prompt.txt").write_text("a cat\n")
    pairs = load_pairs(two_images / "folder")
    assert pairs[0].prompt == "a cat" and pairs[0].rejected.endswith("rejected.jpg")
    many = [PreferencePair(f"p{i}", "a", "b") for i in range(50)]
    train, held = split_pairs(many, 0.2, seed=1)
    assert len(held) == 10 and not set(train) & set(held) and split_pairs(many, 0.2, seed=1) == (train, held)
    write_pairs(pairs, two_images / "copy.jsonl")
    assert load_pairs(two_images / "copy.jsonl") == pairs


# --- objectives use the scorer's own prompts -----------------------------------------------------------------------
def test_pairwise_examples_are_the_scorers_queries_plus_the_verdict(synthetic, reward_models):
    from rewarddance.backend.scoring.answer import AnswerTokens
    from rewarddance.backend.scoring.prompts import pairwise_query
    from rewarddance.backend.training.objectives import VisualCache, pairwise_examples, tokenised

    rm = reward_models("qwen2_5_vl")
    pair = load_pairs(synthetic)[0]
    load = VisualCache()
    examples = pairwise_examples(pair, rm.config, load)
    prepared = tokenised(rm.scorer, examples)
    tokens = AnswerTokens.from_config(rm.vlm.tokenizer, rm.config)
    expected = [
        (load(pair.rejected), load(pair.chosen), tokens.yes_ids[0]),
        (load(pair.chosen), load(pair.rejected), tokens.no_ids[0]),
    ]
    for e, p, (ref, cand, target) in zip(examples, prepared, expected):
        assert e.targets == 1 and int(p.input_ids[-1]) == target
        scoring = rm.scorer.prepare([pairwise_query(ref, cand, pair.prompt, rm.config)])[0]
        assert torch.equal(p.input_ids[:-1], scoring.input_ids)


# --- learning, export, resume ------------------------------------------------------------------------------------------
def test_pairwise_training_learns_on_a_fixed_seed(synthetic, tiny_dirs, tmp_path):
    result = train_reward_model(config(tiny_dirs, synthetic, tmp_path / "run", steps=80, batch_size=8))
    assert result["eval_pairs"] == 20 and result["step"] == 80
    assert result["eval"]["pairwise_accuracy"] >= 0.75  # chance is 0.5; the untrained model scores 0.5
    rows = [json.loads(line) for line in (tmp_path / "run" / "log.jsonl").read_text().splitlines()]
    losses = [r["loss"] for r in rows if "loss" in r]
    assert len(losses) == 80 and sum(losses[-10:]) < sum(losses[:10])
    assert (tmp_path / "run" / "chart.png").stat().st_size > 1000


@pytest.mark.parametrize("lora", [False, True])
def test_exported_checkpoint_scores_like_the_trained_model(synthetic, tiny_dirs, tmp_path, capsys, lora):
    from rewarddance.backend.cli import main

    training = RewardModelTraining(
        config(
            tiny_dirs,
            synthetic,
            tmp_path / "run",
            steps=3,
            lora=lora,
            lora_rank=4,
            lora_alpha=8,
            lora_targets=["q_proj", "v_proj"],
        )
    )
    result = training.train()
    json.dumps(result)  # the summary is plain data
    files = [p.chosen for p in load_pairs(synthetic)[:3]]
    in_memory = training.reward_model().score(files, "a clean, natural photograph").scores
    assert (
        main(
            [
                "score",
                *files,
                "--prompt",
                "a clean, natural photograph",
                "--json",
                "--model",
                result["model"],
                "--dtype",
                "fp32",
                "--device",
                "cpu",
            ]
        )
        == 0
    )
    loaded = [row["score"] for row in json.loads(capsys.readouterr().out)]
    assert loaded == pytest.approx(in_memory, abs=1e-5)


def test_interrupt_then_resume_reaches_the_same_final_step_and_weights(synthetic, tiny_dirs, tmp_path):
    from safetensors.torch import load_file

    straight = train_reward_model(config(tiny_dirs, synthetic, tmp_path / "straight", steps=6))
    calls = {"n": 0}

    def stop_after_three() -> bool:
        calls["n"] += 1
        return calls["n"] == 3

    first = train_reward_model(
        config(tiny_dirs, synthetic, tmp_path / "resumed", steps=6, save_every=2), should_stop=stop_after_three
    )
    assert first["interrupted"] and first["step"] == 3 and first["checkpoint"].endswith("checkpoint")
    assert json.loads((Path(first["checkpoint"]) / "state.json").read_text())["step"] == 3
    with (tmp_path / "resumed" / "log.jsonl").open("a") as fh:  # as if a crash came after logging step 4
        fh.write(json.dumps({"step": 4, "loss": 9.9}) + "\n")
    second = train_reward_model(config(tiny_dirs, synthetic, tmp_path / "resumed", steps=6, save_every=2))
    assert second["resumed"] and second["step"] == 6 and not second["interrupted"]
    steps = [
        json.loads(line)["step"]
        for line in (tmp_path / "resumed" / "log.jsonl").read_text().splitlines()
        if "loss" in json.loads(line)
    ]
    assert steps == [1, 2, 3, 4, 5, 6]
    a = load_file(str(tmp_path / "straight" / "model" / "model.safetensors"))
    b = load_file(str(tmp_path / "resumed" / "model" / "model.safetensors"))
    assert a.keys() == b.keys() and all(torch.allclose(a[k], b[k], atol=1e-6) for k in a)
    assert straight["step"] == 6


def test_a_checkpoint_of_the_previous_release_resumes_to_the_same_weights(synthetic, tiny_dirs, tmp_path):
    """The previous release kept `checkpoints/step-N/` (no `initial` in its state); such a run continues and ends
    with the weights of an uninterrupted run."""
    import shutil

    from safetensors.torch import load_file

    train_reward_model(config(tiny_dirs, synthetic, tmp_path / "straight", steps=4))
    train_reward_model(config(tiny_dirs, synthetic, tmp_path / "old", steps=2))
    old = tmp_path / "old" / "checkpoints" / "step-0000002"
    old.parent.mkdir()
    shutil.move(str(tmp_path / "old" / "checkpoint"), str(old))
    state = json.loads((old / "state.json").read_text())
    (old / "state.json").write_text(json.dumps({"step": state["step"], "config": state["config"]}))
    resumed = train_reward_model(config(tiny_dirs, synthetic, tmp_path / "old", steps=4))
    assert resumed["resumed"] and resumed["step"] == 4
    a = load_file(str(tmp_path / "straight" / "model" / "model.safetensors"))
    b = load_file(str(tmp_path / "old" / "model" / "model.safetensors"))
    assert a.keys() == b.keys() and all(torch.allclose(a[k], b[k], atol=1e-6) for k in a)


def test_pointwise_objective_trains(synthetic, tiny_dirs, tmp_path):
    seen = []
    result = train_reward_model(
        config(tiny_dirs, synthetic, tmp_path / "run", steps=3, objective="pointwise"),
        progress=lambda s, n, m: seen.append(m),
    )
    assert result["step"] == 3 and set(seen[0]) >= {"loss", "bt", "ce", "pair_accuracy"}
    assert all(torch.isfinite(torch.tensor(m["loss"])) for m in seen)


# --- config and CLI --------------------------------------------------------------------------------------------------
def test_train_and_eval_from_the_command_line(tiny_dirs, tmp_path, capsys):
    from rewarddance.backend.cli import main

    assert (
        main(["make-pairs", "--out", str(tmp_path / "data"), "--n", "12", "--size", "48", "--eval-fraction", "0"]) == 0
    )
    capsys.readouterr()
    cfg = tmp_path / "rm.toml"
    cfg.write_text(
        f'model = "{tiny_dirs["qwen2_5_vl"]}"\npairs = "data/pairs.jsonl"\nout = "run"\nlora = false\n'
        'freeze_vision = false\nsteps = 2\nbatch_size = 2\ndtype = "fp32"\ndevice = "cpu"\n'
        'learning_rate = 0.001\n[scoring]\ncriteria = ["overall"]\n'
    )
    assert main(["train-rm", "--config", str(cfg), "--quiet"]) == 0
    summary = json.loads(capsys.readouterr().out)
    assert summary["step"] == 2 and summary["model"].endswith("run/model")
    trained = json.loads((tmp_path / "run" / "model" / "rewarddance_training.json").read_text())
    assert trained["scoring"] == {"criteria": ["overall"]}
    from rewarddance.backend import RewardModel

    loaded = RewardModel.from_pretrained(summary["model"], dtype="fp32", device="cpu")
    assert loaded.config.criteria == ("overall",)  # scored the way it was trained, with no extra flags
    assert RewardModel.from_pretrained(
        summary["model"], dtype="fp32", device="cpu", criteria="text"
    ).config.criteria == ("text",)
    assert (
        main(
            [
                "eval-rm",
                "--model",
                summary["model"],
                "--pairs",
                str(tmp_path / "data" / "pairs.jsonl"),
                "--ood-pairs",
                str(tmp_path / "data" / "pairs.jsonl"),
                "--dtype",
                "fp32",
                "--device",
                "cpu",
                "--json",
            ]
        )
        == 0
    )
    report = json.loads(capsys.readouterr().out)
    assert set(report) == {"in_domain", "out_of_domain"} and report["in_domain"]["pairs"] == 12
    assert 0 <= report["in_domain"]["pairwise_accuracy"] <= 1 and report["in_domain"]["reliability"]


@pytest.mark.parametrize(
    "text,word",
    [
        ('model = "m"\npairs = "p.jsonl"\n', "missing required key"),
        ('model = "m"\npairs = "p.jsonl"\nout = "o"\nobjective = "regression"\n', "objective"),
        ('model = "m"\npairs = "p.jsonl"\nout = "o"\nstep = 3\n', "unknown key"),
        ('model = "m"\npairs = "p.jsonl"\nout = "o"\n[scoring]\nnormalize = "softmax"\n', "scoring"),
    ],
)
def test_bad_training_configs(tmp_path, text, word):
    path = tmp_path / "rm.toml"
    path.write_text(text)
    with pytest.raises(ValueError, match=word):
        load_train_config(path)


@pytest.mark.parametrize("cot", ["answer_first", "reasoning_first"])
def test_chain_of_thought_targets_include_the_reason(synthetic, reward_models, cot):
    from rewarddance.backend.training.objectives import VisualCache, pairwise_examples, pairwise_loss, tokenised

    rm = reward_models("qwen2_5_vl")
    pair = load_pairs(synthetic)[0]
    assert pair.reason
    cfg = rm.config.with_overrides(cot=cot)
    examples = pairwise_examples(pair, cfg, VisualCache())
    text = examples[0].query.continuation
    assert pair.reason in text and (
        text.startswith("Yes") if cot == "answer_first" else text.endswith("Final answer: yes")
    )
    tokenised(rm.scorer, examples)
    assert all(e.targets > 5 for e in examples)
    loss, _ = pairwise_loss(rm.scorer, examples)
    assert torch.isfinite(loss)
