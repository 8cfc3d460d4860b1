"""Judge presets: UnifiedReward's prompts read as probabilities equal a plain transformers computation; yes_no is
the default and unchanged; bad names and options that cannot apply are refused clearly."""

from __future__ import annotations

import inspect

import pytest
import torch
from PIL import Image as PILImage

from rewarddance.backend import RewardModel, Video
from rewarddance.backend.cli import main
from rewarddance.backend.scoring.config import ScoringConfig
from rewarddance.backend.scoring.judges import (
    JUDGES,
    UNIFIEDREWARD_PAIRWISE,
    UNIFIEDREWARD_POINTWISE,
    expected_value,
    judge_named,
)

QWEN_FAMILIES = ("qwen2_5_vl", "qwen3_vl")
MODEL_CLASSES = {"qwen2_5_vl": "Qwen2_5_VLForConditionalGeneration", "qwen3_vl": "Qwen3VLForConditionalGeneration"}


@pytest.fixture(scope="module")
def judges(tiny_dirs):
    """family -> RewardModel with the unifiedreward preset (fp32, CPU)."""
    return {
        f: RewardModel.from_pretrained(str(tiny_dirs[f]), dtype="fp32", device="cpu", judge="unifiedreward")
        for f in QWEN_FAMILIES
    }


def plain_reading(family: str, ckpt, image_paths, text: str, prefix: str, answers: list[str]) -> float:
    """Plain transformers: chat template + answer prefix, one forward, softmax over `answers`, expected rank in [0, 1]."""
    import transformers
    from helpers import pil_image_processor
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(ckpt)
    model = getattr(transformers, MODEL_CLASSES[family]).from_pretrained(ckpt, dtype=torch.float32).eval()
    images = pil_image_processor("qwen", ckpt)(
        images=[PILImage.open(p).convert("RGB") for p in image_paths], return_tensors="pt"
    )
    content = [{"type": "image"} for _ in image_paths] + [{"type": "text", "text": text}]
    rendered = tok.apply_chat_template(
        [{"role": "user", "content": content}],
        chat_template=(ckpt / "chat_template.jinja").read_text(),
        tokenize=False,
        add_generation_prompt=True,
    )
    pieces = rendered.split("<|image_pad|>")
    assert len(pieces) == len(image_paths) + 1
    counts = [int(g.prod()) // 4 for g in images["image_grid_thw"]]
    expanded = pieces[0] + "".join("<|image_pad|>" * n + rest for n, rest in zip(counts, pieces[1:]))
    inputs = tok(expanded + prefix, return_tensors="pt")
    extra = {}
    if "mm_token_type_ids" in inspect.signature(model.forward).parameters:
        extra["mm_token_type_ids"] = (inputs["input_ids"] == tok.convert_tokens_to_ids("<|image_pad|>")).int()
    with torch.no_grad():
        logits = model(**inputs, **images, **extra).logits[0, -1]
    ids = [tok(a, add_special_tokens=False)["input_ids"] for a in answers]
    assert all(len(i) == 1 for i in ids)
    probs = logits[[i[0] for i in ids]].double().softmax(-1)
    return float((probs * torch.linspace(0, 1, len(answers), dtype=torch.float64)).sum())


@pytest.mark.parametrize("family", QWEN_FAMILIES)
def test_unifiedreward_pointwise_is_the_expected_score_of_a_plain_forward(judges, tiny_dirs, photo_paths, family):
    paths = photo_paths[:2]
    scores = judges[family].score([str(p) for p in paths], "a red fox").scores
    for path, score in zip(paths, scores):
        text = UNIFIEDREWARD_POINTWISE.replace("{prompt}", "a red fox")
        ref = plain_reading(family, tiny_dirs[family], [path], text, "Final Score: ", ["1", "2", "3", "4", "5"])
        assert 0.0 <= score <= 1.0
        assert score == pytest.approx(ref, abs=1e-5)


@pytest.mark.parametrize("family", QWEN_FAMILIES)
def test_unifiedreward_pairwise_is_p_candidate_of_a_plain_forward(judges, tiny_dirs, photo_paths, family):
    reference, candidates = photo_paths[0], photo_paths[1:3]
    scores = judges[family].compare([str(p) for p in candidates], str(reference), "a red fox").scores
    for candidate, score in zip(candidates, scores):
        text = UNIFIEDREWARD_PAIRWISE.replace("{prompt}", "a red fox")
        # image 1 = reference, image 2 = candidate; P("2") of the two verdict tokens = P(candidate beats reference)
        ref = plain_reading(family, tiny_dirs[family], [reference, candidate], text, "Image ", ["1", "2"])
        assert score == pytest.approx(ref, abs=1e-5)


def test_tournament_rank_and_per_call_override(judges, reward_models, photo_paths):
    rm = judges["qwen2_5_vl"]
    files = [str(p) for p in photo_paths[:3]]
    matrix = rm.tournament(files, "a red fox").matrix
    direct = rm.compare([files[1]], files[0], "a red fox").scores[0]
    assert matrix[0][1] == pytest.approx(direct, abs=1e-6)
    ranked = rm.rank(files, "a red fox", top_k=2)
    assert ranked.scores == sorted(rm.score(files, "a red fox").scores, reverse=True)[:2]
    plain = reward_models("qwen2_5_vl")  # yes_no model: the preset can be chosen per call
    assert plain.score(files[:1], "a red fox", judge="unifiedreward").scores == pytest.approx(
        rm.score(files[:1], "a red fox").scores, abs=1e-7
    )
    assert rm.score(files[:1], "a red fox", judge="yes_no").scores == plain.score(files[:1], "a red fox").scores


def test_reward_is_differentiable_with_a_judge_preset(judges):
    image = torch.rand(1, 56, 56, 3, requires_grad=True)
    value = judges["qwen2_5_vl"].reward(image, "a red fox")
    value.sum().backward()
    assert value.shape == (1,) and image.grad is not None and image.grad.abs().sum() > 0


def test_yes_no_is_the_default_and_unchanged(reward_models, photo_paths):
    assert ScoringConfig().judge == "yes_no" and judge_named("yes_no").own_wording
    rm = reward_models("qwen2_5_vl")
    files = [str(p) for p in photo_paths[:2]]
    assert rm.score(files, "a fox", judge="yes_no").scores == rm.score(files, "a fox").scores
    assert (
        rm.compare(files[1:], files[0], "a fox", judge="yes_no").scores
        == rm.compare(files[1:], files[0], "a fox").scores
    )


def test_expected_value_reading():
    logits = torch.full((2, 8), -1e4)
    logits[0, 3] = 0.0  # all mass on the lowest answer token
    logits[1, [3, 7]] = 0.0  # half on the lowest, half on the highest
    assert expected_value(logits, [3, 5, 7]).tolist() == pytest.approx([0.0, 0.5])


def test_bad_judge_names_and_options_that_cannot_apply(judges, photo_paths, capsys):
    with pytest.raises(ValueError, match=r"judge must be one of yes_no, unifiedreward, got 'bogus'"):
        ScoringConfig(judge="bogus").validate()
    with pytest.raises(ValueError, match=r"judge must be one of"):
        judge_named("bogus")
    with pytest.raises(ValueError, match=r"judge 'unifiedreward' asks its own question, so criteria, cot"):
        ScoringConfig(judge="unifiedreward", criteria=("overall",), cot="answer_first").validate()
    rm = judges["qwen2_5_vl"]
    with pytest.raises(ValueError, match="remove criteria or use judge 'yes_no'"):
        rm.score([str(photo_paths[0])], "a fox", criteria="overall")
    with pytest.raises(ValueError, match="scores images only"):
        rm.score(Video(torch.rand(2, 56, 56, 3), fps=2.0), "a fox")
    from rewarddance.backend import FewShotExample

    with pytest.raises(ValueError, match="few_shot: judge 'unifiedreward'"):
        rm.score([str(photo_paths[0])], "a fox", few_shot=[FewShotExample(str(photo_paths[1]), True)])
    assert set(JUDGES) == {"yes_no", "unifiedreward"}
    photo = str(photo_paths[0])
    with pytest.raises(SystemExit):
        main(["score", photo, "--prompt", "x", "--judge", "bogus"])
    err = capsys.readouterr().err
    assert "--judge: invalid choice: 'bogus'" in err and "yes_no" in err and "unifiedreward" in err
    assert main(["score", photo, "--prompt", "x", "--judge", "unifiedreward", "--criteria", "overall"]) == 2
    err = capsys.readouterr().err.strip()
    assert err == (
        "rewarddance: error: --judge unifiedreward asks the checkpoint's own question, so --criteria cannot apply; "
        "remove --criteria or use --judge yes_no"
    )


def test_http_field_and_server_scoring_spec():
    from rewarddance.backend.server.errors import ApiError
    from rewarddance.backend.server.protocol import scoring_overrides
    from rewarddance.backend.server.settings import ModelSpec

    assert scoring_overrides({"judge": "unifiedreward"}) == {"judge": "unifiedreward"}
    with pytest.raises(ApiError, match="judge: expected one of yes_no, unifiedreward, got 'bogus'"):
        scoring_overrides({"judge": "bogus"})
    with pytest.raises(Exception, match=r"models\.j\.scoring: judge must be one of yes_no, unifiedreward"):
        ModelSpec(name="j", path="x", scoring={"judge": "bogus"}).validate()


def test_rl_reward_specs_take_a_judge(judges, tiny_dirs):
    from rewarddance.backend.rl.config import RewardSpecs, check_reward_spec

    spec = {"kind": "pointwise", "model": str(tiny_dirs["qwen2_5_vl"]), "dtype": "fp32", "device": "cpu"}
    check_reward_spec({**spec, "judge": "unifiedreward"}, "rewards")
    for bad in ({**spec, "judge": "bogus"}, {"kind": "colour", "judge": "unifiedreward"}):
        with pytest.raises(ValueError, match=r"rewards\[\]\.judge applies to pointwise, pairwise, pairwise_group"):
            check_reward_spec(bad, "rewards")
    reward = RewardSpecs(lambda prompt: None, 1).reward({**spec, "judge": "unifiedreward"}, "a red fox")
    assert reward.options == {"judge": "unifiedreward"}
    images = torch.rand(2, 56, 56, 3)
    expected = judges["qwen2_5_vl"].score(images, "a red fox").scores
    assert reward(images).tolist() == pytest.approx(expected, abs=1e-6)


def test_server_batcher_reads_pairwise_rows_with_the_verdict_tokens(judges, photo_paths):
    from rewarddance.backend.reward_model import compare_queries, score_queries
    from rewarddance.backend.server.batcher import _score_prepared

    rm = judges["qwen2_5_vl"]
    files = [str(p) for p in photo_paths[:3]]
    jobs = [compare_queries(files[1:], files[0], "a fox", rm.config), score_queries(files[:1], "a fox", rm.config)]
    prepared = [rm.scorer.prepare(q) for q in jobs]
    out = _score_prepared(rm, prepared, [rm.config, rm.config], 1536, lambda: False)
    assert out[0][0] == pytest.approx(rm.compare(files[1:], files[0], "a fox").scores, abs=1e-6)
    assert out[1][0] == pytest.approx(rm.score(files[:1], "a fox").scores, abs=1e-6)
