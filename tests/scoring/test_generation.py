"""Batched chain-of-thought generation equals transformers' one-query generate; samples=k judge voting."""

from __future__ import annotations

import json
from contextlib import contextmanager
from dataclasses import replace

import pytest
import torch
from conftest import FAMILIES

from rewarddance.backend.media import to_visuals
from rewarddance.backend.reward_model import reasoning_before_verdict
from rewarddance.backend.scoring.config import ScoringConfig
from rewarddance.backend.scoring.generation import Sampling, top_p_probabilities
from rewarddance.backend.scoring.prompts import VERDICT_MARKER, pairwise_query, pointwise_query

TOKENS = 6


def transformers_generate(rm, query, max_new_tokens: int) -> str:
    """The one-query reference: the checkpoint's own `generate` (greedy) on the prepared query, as before batching."""
    scorer = rm.scorer
    p = scorer.prepare([query])[0]
    ids = p.input_ids[None]
    kwargs = scorer.family.model_inputs(p.visuals, rm.vlm.dtype)
    if scorer.family.mm_token_types:
        kwargs["mm_token_type_ids"] = scorer.family.token_types(ids)
    with torch.no_grad():
        out = rm.vlm.model.generate(
            input_ids=ids,
            attention_mask=torch.ones_like(ids),
            max_new_tokens=max_new_tokens,
            do_sample=False,
            pad_token_id=scorer.tokenizer.pad_token_id,
            **kwargs,
        )
    return scorer.tokenizer.decode(out[0, ids.shape[1] :], skip_special_tokens=True)


def mixed_queries(photo_paths, config):
    """Pointwise queries of different lengths and pairwise ones that share a reference (a shared prefix)."""
    visuals = to_visuals([str(p) for p in photo_paths[:3]])
    prompts = ["a cup of coffee on a wooden table in the morning light", "x"]
    point = [pointwise_query(v, p, config) for v, p in zip(visuals[1:], prompts)]
    pair = [pairwise_query(visuals[0], v, "a cat", config) for v in visuals[1:]]
    return point + pair


@contextmanager
def generation_config(rm, **values):
    """Temporarily change the checkpoint's generation config (the session's models are shared)."""
    gc = rm.vlm.model.generation_config
    saved = {k: getattr(gc, k) for k in values}
    for k, v in values.items():
        setattr(gc, k, v)
    try:
        yield
    finally:
        for k, v in saved.items():
            setattr(gc, k, v)


@pytest.mark.parametrize("family", FAMILIES)
def test_batched_generation_equals_one_query_generate(reward_models, photo_paths, family):
    rm = reward_models(family)
    queries = mixed_queries(photo_paths, ScoringConfig(cot="reasoning_first"))
    expected = [[transformers_generate(rm, q, TOKENS)] for q in queries]
    for prefix_reuse in (True, False):
        before = rm.scorer.stats["prefix_forwards"]
        prepared = rm.scorer.prepare(queries)
        got = rm.scorer.generate(prepared, TOKENS, 10**6, prefix_reuse=prefix_reuse, min_prefix_tokens=4)
        assert got == expected
        assert (rm.scorer.stats["prefix_forwards"] > before) == prefix_reuse  # the shared prefix ran once


@pytest.mark.parametrize("family", FAMILIES)
def test_rows_stop_at_eos_while_the_others_go_on(reward_models, photo_paths, family):
    rm = reward_models(family)
    queries = mixed_queries(photo_paths, ScoringConfig(cot="reasoning_first"))[:3]
    tok = rm.vlm.tokenizer
    free = rm.scorer.generate(rm.scorer.prepare(queries), TOKENS, 10**6)
    stop_token = tok(free[1][0], add_special_tokens=False)["input_ids"][2]  # the third token of query 1
    with generation_config(rm, eos_token_id=[stop_token]):
        expected = [transformers_generate(rm, q, TOKENS) for q in queries]
        got = rm.scorer.generate(rm.scorer.prepare(queries), TOKENS, 700)  # small budget: several batches
    assert got == [[e] for e in expected]
    assert free[1][0].startswith(got[1][0]) and len(got[1][0]) < len(free[1][0])  # stopped early
    assert any(g == f for g, f in zip(got, free))  # a row without the token went on to the budget


def test_repetition_penalty_of_the_checkpoint_is_applied_like_generate(reward_models, photo_paths):
    rm = reward_models("qwen2_vl")
    queries = mixed_queries(photo_paths, ScoringConfig(cot="reasoning_first"))
    with generation_config(rm, repetition_penalty=3.0):
        expected = [transformers_generate(rm, q, TOKENS) for q in queries]
        got = rm.scorer.generate(rm.scorer.prepare(queries), TOKENS, 10**6, min_prefix_tokens=4)
    plain = rm.scorer.generate(rm.scorer.prepare(queries), TOKENS, 10**6, min_prefix_tokens=4)
    assert got == [[e] for e in expected] and got != plain


@pytest.mark.parametrize("family", ["qwen2_5_vl", "internvl"])
def test_reasoning_first_scores_equal_one_query_at_a_time(reward_models, photo_paths, family):
    rm = reward_models(family)
    config = ScoringConfig(cot="reasoning_first", reason_tokens=6)
    result = rm.compare([str(p) for p in photo_paths[1:4]], str(photo_paths[0]), "a cat", **_fields(config))
    scores, reasons = [], []
    for cand in photo_paths[1:4]:  # today's path: generate one query, read its verdict alone
        (ref, c) = to_visuals([str(photo_paths[0]), str(cand)])
        q = pairwise_query(ref, c, "a cat", config)
        text = transformers_generate(rm, q, 6)
        q.continuation = reasoning_before_verdict(text) + "\n" + VERDICT_MARKER
        logits = rm.scorer.last_logits(rm.scorer.prepare([q]), 10**6, prefix_reuse=False)
        scores.append(rm.read_scores(logits, config, [True]).item())
        reasons.append(text)
    assert result.reasons == reasons and result.spread is None
    assert result.scores == pytest.approx(scores, abs=1e-5)


def _fields(config: ScoringConfig) -> dict:
    return {"cot": config.cot, "reason_tokens": config.reason_tokens}


SAMPLED = {"cot": "reasoning_first", "reason_tokens": 5, "samples": 3, "temperature": 1.0}


def test_samples_are_deterministic_per_seed_and_differ_across_seeds(reward_models, photo_paths):
    rm = reward_models("qwen2_5_vl")
    files = [str(p) for p in photo_paths[:2]]
    a, b = rm.score(files, "a cat", seed=1, **SAMPLED), rm.score(files, "a cat", seed=1, **SAMPLED)
    other = rm.score(files, "a cat", seed=2, **SAMPLED)
    assert a == b
    assert a.reasons != other.reasons and a.scores != other.scores
    small = rm.score(files, "a cat", seed=1, max_batch_tokens=400, **SAMPLED)  # other batches, same draws
    assert small.reasons == a.reasons and small.scores == pytest.approx(a.scores, abs=1e-5)


def test_sampled_score_is_the_mean_of_its_judgements_and_spread_their_std(reward_models, photo_paths):
    rm = reward_models("qwen2_5_vl")
    files = [str(p) for p in photo_paths[:2]]
    config = rm.settings({**SAMPLED, "seed": 3, "top_p": 0.9})
    result = rm.score(files, "a cat", **SAMPLED, seed=3, top_p=0.9)
    queries = [pointwise_query(v, "a cat", config) for v in to_visuals(files)]
    texts = rm.generate(rm.scorer.prepare(queries), config)
    assert len(texts) == 2 and all(len(t) == 3 for t in texts) and [t[0] for t in texts] == result.reasons
    assert len({*texts[0]}) > 1  # the samples differ
    for i, q in enumerate(queries):
        judged = [replace(q, continuation=reasoning_before_verdict(t) + "\n" + VERDICT_MARKER) for t in texts[i]]
        probs = torch.tensor([rm.probabilities([j], config).item() for j in judged])
        assert result.scores[i] == pytest.approx(probs.mean().item(), abs=1e-5)
        assert result.spread[i] == pytest.approx(probs.std(unbiased=False).item(), abs=1e-5)


def test_one_sample_at_temperature_zero_is_the_greedy_path(reward_models, photo_paths):
    rm = reward_models("qwen3_vl")
    files = [str(p) for p in photo_paths[:2]]
    greedy = rm.score(files, "a cat", cot="reasoning_first", reason_tokens=5)
    explicit = rm.score(files, "a cat", cot="reasoning_first", reason_tokens=5, samples=1, temperature=0.0, seed=9)
    assert explicit == greedy and greedy.spread is None
    # a nucleus too small for a second token samples the most likely one: greedy again
    tiny_p = rm.score(files, "a cat", cot="reasoning_first", reason_tokens=5, temperature=1.0, top_p=1e-9)
    assert tiny_p.reasons == greedy.reasons


def test_top_p_keeps_the_smallest_set_reaching_the_mass():
    logits = torch.log(torch.tensor([[0.5, 0.3, 0.15, 0.05]]))
    assert torch.allclose(top_p_probabilities(logits, 0.7), torch.tensor([[0.625, 0.375, 0.0, 0.0]]))
    assert torch.allclose(top_p_probabilities(logits, 0.4), torch.tensor([[1.0, 0.0, 0.0, 0.0]]))
    assert torch.allclose(top_p_probabilities(logits, 1.0), torch.tensor([[0.5, 0.3, 0.15, 0.05]]))
    assert Sampling().greedy and not Sampling(temperature=0.5).greedy


@pytest.mark.parametrize(
    "fields,word",
    [
        ({"samples": 0}, "samples"),
        ({"samples": 2.5}, "samples"),
        ({"samples": 65}, "samples"),
        ({"samples": 4, "temperature": 0.7}, "reasoning_first"),
        ({"samples": 4, "cot": "reasoning_first"}, "temperature"),
        ({"temperature": -0.1}, "temperature"),
        ({"temperature": float("nan")}, "temperature"),
        ({"top_p": 0.0}, "top_p"),
        ({"top_p": 1.5}, "top_p"),
        ({"seed": -1}, "seed"),
        ({"seed": "7"}, "seed"),
    ],
)
def test_bad_sampling_values_are_rejected_naming_the_field(fields, word):
    with pytest.raises(ValueError, match=word):
        ScoringConfig().with_overrides(**fields)


def test_bad_sampling_values_rejected_by_the_api_and_the_node_logic(reward_models, photo_paths):
    from rewarddance.backend.node_logic import build_criteria

    rm = reward_models("qwen2_5_vl")
    with pytest.raises(ValueError, match="samples"):
        rm.score([str(photo_paths[0])], "a cat", samples=0)
    with pytest.raises(ValueError, match="temperature"):
        build_criteria(["alignment"], cot="reasoning_first", samples=3)
    crit = build_criteria(["alignment"], cot="reasoning_first", samples=3, temperature=0.8, seed=4)
    assert crit.overrides() == {
        "cot": "reasoning_first",
        "samples": 3,
        "temperature": 0.8,
        "seed": 4,
        "criteria": ["alignment"],
    }
    assert "samples" not in crit.reward_options() and build_criteria(["alignment"]).overrides() == {
        "cot": "none",
        "criteria": ["alignment"],
    }


def _cli(capsys, *args: str) -> tuple[int, str, str]:
    """Run the command line in this process: (exit status, stdout, stderr)."""
    from rewarddance.backend.cli import main

    status = main(list(args))
    out = capsys.readouterr()
    return status, out.out, out.err


@pytest.mark.parametrize(
    "flags,word",
    [
        (["--samples", "0"], "--samples"),
        (["--samples", "3", "--temperature", "0.7"], "reasoning_first"),
        (["--samples", "3", "--cot", "reasoning_first"], "temperature"),
        (["--top-p", "2"], "--top-p"),
        (["--temperature", "-1"], "--temperature"),
        (["--seed", "-2"], "--seed"),
        (["--reason-tokens", "0"], "--reason-tokens"),
    ],
)
def test_cli_rejects_bad_sampling_flags_before_loading(capsys, tiny_dirs, photo_paths, flags, word):
    args = ["score", str(photo_paths[0]), "--prompt", "x", "--model", str(tiny_dirs["qwen2_5_vl"]), *flags]
    status, _, err = _cli(capsys, *args)
    assert status == 2 and word in err and "Traceback" not in err, err


def test_cli_samples_print_the_spread(capsys, tiny_dirs, reward_models, photo_paths):
    flags = ["--cot", "reasoning_first", "--samples", "3", "--temperature", "1.0", "--top-p", "0.9", "--seed", "2"]
    flags += ["--reason-tokens", "5"]
    args = ["score", str(photo_paths[0]), "--prompt", "a cat", "--model", str(tiny_dirs["qwen2_5_vl"]), "--json"]
    status, out, err = _cli(capsys, *args, *flags, "--dtype", "fp32", "--device", "cpu")
    assert status == 0, err
    row = json.loads(out)[0]
    local = reward_models("qwen2_5_vl").score(
        [str(photo_paths[0])],
        "a cat",
        cot="reasoning_first",
        samples=3,
        temperature=1.0,
        top_p=0.9,
        seed=2,
        reason_tokens=5,
    )
    assert row["score"] == pytest.approx(local.scores[0], abs=1e-5)
    assert row["spread"] == pytest.approx(local.spread[0], abs=1e-5)
