"""Scores equal reference computations; batching, prefix reuse, normalisation, few-shot, CoT, video, ranking."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest
import torch
from conftest import FAMILIES
from PIL import Image as PILImage

from rewarddance.backend import FewShotExample, Video
from rewarddance.backend.scoring.answer import AnswerTokens, yes_probability
from rewarddance.backend.scoring.config import ScoringConfig
from rewarddance.backend.scoring.prompts import VERDICT_MARKER, pointwise_query

QUESTION = 'Does this image show "{prompt}"?'


def transformers_reference(ckpt, image_path, prompt: str) -> float:
    """A plain transformers computation: processor pixels, chat template, one forward, vocab softmax of 'Yes'."""
    from helpers import pil_image_processor
    from transformers import AutoTokenizer, Qwen2_5_VLForConditionalGeneration

    tok = AutoTokenizer.from_pretrained(ckpt)
    model = Qwen2_5_VLForConditionalGeneration.from_pretrained(ckpt, torch_dtype=torch.float32).eval()
    images = pil_image_processor("qwen", ckpt)(images=[PILImage.open(image_path).convert("RGB")], return_tensors="pt")
    messages = [
        {"role": "user", "content": [{"type": "image"}, {"type": "text", "text": QUESTION.replace("{prompt}", prompt)}]}
    ]
    text = tok.apply_chat_template(
        messages, chat_template=(ckpt / "chat_template.jinja").read_text(), tokenize=False, add_generation_prompt=True
    )
    n = int(images["image_grid_thw"][0].prod()) // 4
    inputs = tok(text.replace("<|image_pad|>", "<|image_pad|>" * n), return_tensors="pt")
    extra = {}
    import inspect

    if "mm_token_type_ids" in inspect.signature(model.forward).parameters:
        extra["mm_token_type_ids"] = (inputs["input_ids"] == tok.convert_tokens_to_ids("<|image_pad|>")).int()
    with torch.no_grad():
        logits = model(**inputs, **images, **extra).logits[0, -1]
    return logits.softmax(-1)[tok("Yes", add_special_tokens=False)["input_ids"][0]].item()


def test_cli_score_equals_plain_transformers(tiny_dirs, photo_paths):
    ckpt = tiny_dirs["qwen2_5_vl"]
    files = [str(p) for p in photo_paths[:3]]
    cmd = [
        sys.executable,
        "-m",
        "rewarddance",
        "score",
        "--model",
        str(ckpt),
        "--prompt",
        "a red fox",
        "--question",
        QUESTION,
        "--normalize",
        "vocab",
        "--answer",
        "Yes",
        "--dtype",
        "float32",
        "--json",
        *files,
    ]
    out = subprocess.run(cmd, capture_output=True, text=True, check=True)
    rows = json.loads(out.stdout)
    assert [r["path"] for r in rows] == files
    for row in rows:
        ref = transformers_reference(ckpt, row["path"], "a red fox")
        assert abs(row["score"] - ref) <= 2e-3
        assert row["score"] == pytest.approx(ref, rel=1e-4, abs=1e-7)


@pytest.mark.parametrize("family", FAMILIES)
def test_each_family_loads_and_scores(reward_models, family, photo_paths):
    rm = reward_models(family)
    assert rm.vlm.family.name == family
    scores = rm.score(photo_paths[:2], "a cat").scores
    assert len(scores) == 2 and all(0.0 < s < 1.0 for s in scores)


@pytest.mark.parametrize("family", FAMILIES)
def test_scores_do_not_depend_on_batch_composition(reward_models, family, photo_paths):
    rm = reward_models(family)
    images = [str(p) for p in photo_paths] + [torch.rand(70, 90, 3)]
    together = rm.score(images, "a cat").scores
    alone = [rm.score([img], "a cat").scores[0] for img in images]
    small_batches = rm.score(images, "a cat", max_batch_tokens=600).scores
    for a, b, c in zip(together, alone, small_batches):
        assert a == pytest.approx(b, abs=1e-5)
        assert a == pytest.approx(c, abs=1e-5)


@pytest.mark.parametrize("family", FAMILIES)
def test_prefix_reuse_equals_unshared_path(reward_models, family, photo_paths):
    rm = reward_models(family)
    before = prefix_runs(rm)
    shared = rm.compare(photo_paths[1:], photo_paths[0], "a cat").scores
    assert prefix_runs(rm) > before, "the reference prefix was not reused"
    plain = rm.compare(photo_paths[1:], photo_paths[0], "a cat", prefix_reuse=False).scores
    assert shared == pytest.approx(plain, abs=1e-4)
    examples = [FewShotExample(photo_paths[0], True), FewShotExample(photo_paths[1], False)]
    few_shared = rm.score(photo_paths[2:], "a cat", few_shot=examples).scores
    few_plain = rm.score(photo_paths[2:], "a cat", few_shot=examples, prefix_reuse=False).scores
    assert few_shared == pytest.approx(few_plain, abs=1e-4)


def prefix_runs(rm) -> int:
    """Shared prefixes a model's scorer has used: run, or taken from its cross-call prefix cache."""
    return rm.scorer.stats["prefix_forwards"] + rm.scorer.stats["prefix_cache_hits"]


def test_prefix_reuse_with_padding_and_small_batches(reward_models, photo_paths):
    rm = reward_models("qwen2_5_vl")
    candidates = [str(p) for p in photo_paths[1:]] + [torch.rand(40, 200, 3)]
    shared = rm.compare(
        candidates, photo_paths[0], ["a cat", "a dog with a longer prompt here", "x", "y z", "w"], max_batch_tokens=900
    ).scores
    plain = rm.compare(
        candidates, photo_paths[0], ["a cat", "a dog with a longer prompt here", "x", "y z", "w"], prefix_reuse=False
    ).scores
    assert shared == pytest.approx(plain, abs=1e-4)


def _logits_for(rm, image, prompt, config):
    prepared = rm.scorer.prepare([pointwise_query(rm_visual(image), prompt, config)])
    return rm.scorer.last_logits(prepared, 10**6, prefix_reuse=False)


def rm_visual(path):
    from rewarddance.backend.media import to_visual

    return to_visual(path)


def test_normalisations_and_answer_variants(reward_models, photo_paths):
    rm = reward_models("qwen2_5_vl")
    config = ScoringConfig()
    logits = _logits_for(rm, photo_paths[0], "a cat", config)[0]
    tok = rm.vlm.tokenizer
    first = lambda w: tok(w, add_special_tokens=False)["input_ids"][0]  # noqa: E731
    vocab = rm.score(photo_paths[:1], "a cat", normalize="vocab").scores[0]
    assert vocab == pytest.approx(logits.softmax(-1)[first("Yes")].item(), rel=1e-5)
    yes_no = rm.score(photo_paths[:1], "a cat", normalize="yes_no").scores[0]
    assert yes_no == pytest.approx(torch.sigmoid(logits[first("Yes")] - logits[first("No")]).item(), rel=1e-5)
    variants = rm.score(photo_paths[:1], "a cat", answer_variants=True).scores[0]
    ids = {first(w) for w in ["Yes", "yes", "YES", " Yes", " yes", " YES"]}
    assert variants == pytest.approx(sum(logits.softmax(-1)[i].item() for i in ids), rel=1e-5)
    custom = rm.score(photo_paths[:1], "a cat", answer="cat", negative="dog", normalize="yes_no").scores[0]
    assert custom == pytest.approx(torch.sigmoid(logits[first("cat")] - logits[first("dog")]).item(), rel=1e-5)


def test_yes_probability_function():
    logits = torch.tensor([[2.0, 0.0, -1.0, 0.5]])
    tokens = AnswerTokens((0,), (2,))
    assert yes_probability(logits, tokens, "vocab").item() == pytest.approx(logits.softmax(-1)[0, 0].item())
    assert yes_probability(logits, tokens, "yes_no").item() == pytest.approx(torch.sigmoid(torch.tensor(3.0)).item())


def test_custom_question_system_and_criteria_change_the_prompt(reward_models, photo_paths):
    rm = reward_models("qwen2_5_vl")
    q = pointwise_query(
        rm_visual(photo_paths[0]), "a cat", ScoringConfig(system="Judge strictly.", criteria=("aesthetics",))
    )
    text = rm.scorer.render(q)
    assert "Judge strictly." in text and "You are a helpful assistant." not in text
    assert "Aesthetics:" in text and '"a cat"' in text
    default = rm.scorer.render(pointwise_query(rm_visual(photo_paths[0]), "a cat", ScoringConfig()))
    assert "You are a helpful assistant." in default
    custom = rm.scorer.render(
        pointwise_query(rm_visual(photo_paths[0]), "a cat", ScoringConfig(question="Is {prompt} here?"))
    )
    assert "Is a cat here?" in custom
    a = rm.score(photo_paths[:1], "a cat", criteria=["aesthetics"]).scores[0]
    b = rm.score(photo_paths[:1], "a cat", criteria=["text"]).scores[0]
    assert a != b


def test_few_shot_examples_come_before_the_query(reward_models, photo_paths):
    rm = reward_models("qwen2_5_vl")
    examples = [FewShotExample(photo_paths[0], True, "a person"), FewShotExample(photo_paths[1], False)]
    q = pointwise_query(rm_visual(photo_paths[2]), "a cat", ScoringConfig(), examples)
    text = rm.scorer.render(q)
    assert text.count("<|vision_start|>") == 3
    assert text.index('"a person"') < text.index("<|im_start|>assistant\nYes<|im_end|>") < text.rindex('"a cat"')
    assert "<|im_start|>assistant\nNo<|im_end|>" in text
    with_shots = rm.score(photo_paths[2:3], "a cat", few_shot=examples).scores[0]
    without = rm.score(photo_paths[2:3], "a cat").scores[0]
    assert with_shots != without


def test_answer_first_cot_scores_first_token_and_returns_reasons(reward_models, photo_paths):
    rm = reward_models("qwen2_5_vl")
    result = rm.score(photo_paths[:2], "a cat", cot="answer_first", reasons=True, reason_tokens=6)
    assert len(result.reasons) == 2 and all(isinstance(r, str) and r for r in result.reasons)
    config = ScoringConfig(cot="answer_first")
    logits = _logits_for(rm, photo_paths[0], "a cat", config)[0]
    yes = rm.vlm.tokenizer("Yes", add_special_tokens=False)["input_ids"][0]
    assert result.scores[0] == pytest.approx(logits.softmax(-1)[yes].item(), rel=1e-5)
    text = rm.scorer.render(pointwise_query(rm_visual(photo_paths[0]), "a cat", config))
    assert "yes or no first" in text


def test_reasoning_first_reads_verdict_after_generated_reasoning(reward_models, photo_paths):
    rm = reward_models("qwen2_5_vl")
    result = rm.score(photo_paths[:1], "a cat", cot="reasoning_first", reason_tokens=5)
    reasoning = result.reasons[0]
    config = ScoringConfig(cot="reasoning_first")
    q = pointwise_query(rm_visual(photo_paths[0]), "a cat", config)
    assert rm.scorer.generate(rm.scorer.prepare([q]), 5, 10**6) == [[reasoning]]  # greedy, deterministic
    from rewarddance.backend.reward_model import reasoning_before_verdict

    q.continuation = reasoning_before_verdict(reasoning) + "\n" + VERDICT_MARKER
    logits = rm.scorer.last_logits(rm.scorer.prepare([q]), 10**6, prefix_reuse=False)[0]
    tok = rm.vlm.tokenizer
    ids = {tok(w, add_special_tokens=False)["input_ids"][0] for w in ["Yes", " Yes"]}
    expected = sum(logits.softmax(-1)[i].item() for i in ids)
    assert result.scores[0] == pytest.approx(expected, rel=1e-5)
    assert rm.scorer.render(q).endswith(VERDICT_MARKER)


@pytest.mark.parametrize("family", FAMILIES)
def test_video_scoring(reward_models, family):
    rm = reward_models(family)
    torch.manual_seed(0)
    frames = torch.rand(12, 64, 80, 3)
    clip = Video(frames, fps=6.0)
    a = rm.score([clip], "a moving cat", criteria="motion,temporal").scores[0]
    assert 0.0 < a < 1.0
    enc = rm.scorer.encode_visuals([clip])[id(clip)]
    assert enc.kind == "video" and enc.num_tokens > 0
    still = Video(frames[:1].expand(12, -1, -1, -1), fps=6.0)
    assert rm.score([still], "a moving cat", criteria="motion,temporal").scores[0] != pytest.approx(a, abs=1e-9)


def test_video_frame_budget(reward_models):
    from rewarddance.backend.vlm.base import VisualOptions

    fam = reward_models("qwen2_5_vl").vlm.family
    clip = Video(torch.rand(100, 32, 32, 3), fps=25.0)
    old = fam.options
    try:
        fam.options = VisualOptions(max_frames=8, fps=2.0)
        enc = fam.encode_video(clip)
        assert int(enc.grid_thw[0, 0]) * 2 == 8  # 4 s at 2 fps = 8 frames, within max_frames
        fam.options = VisualOptions(max_frames=4, fps=2.0)
        assert int(fam.encode_video(clip).grid_thw[0, 0]) * 2 == 4
    finally:
        fam.options = old


def test_video_from_gif_file(reward_models, tmp_path):
    frames = [PILImage.new("RGB", (40, 30), (i * 40, 0, 0)) for i in range(6)]
    frames[0].save(tmp_path / "clip.gif", save_all=True, append_images=frames[1:], duration=100, loop=0)
    rm = reward_models("qwen2_5_vl")
    from rewarddance.backend.media import load_visual_file

    clip = load_visual_file(tmp_path / "clip.gif")
    assert isinstance(clip, Video) and clip.frames.shape[0] == 6 and clip.fps == pytest.approx(10.0)
    assert 0 < rm.score([str(tmp_path / "clip.gif")], "red").scores[0] < 1


def test_rank_compare_tournament(reward_models, photo_paths):
    rm = reward_models("qwen2_5_vl")
    scores = rm.score(photo_paths, "a cat").scores
    ranked = rm.rank(photo_paths, "a cat", top_k=3)
    assert ranked.indices == sorted(range(len(scores)), key=lambda i: -scores[i])[:3]
    assert ranked.scores == [scores[i] for i in ranked.indices]
    t = rm.tournament(photo_paths[:3], "a cat")
    pair = rm.compare([photo_paths[1]], photo_paths[0], "a cat").scores[0]
    assert t.matrix[0][1] == pytest.approx(pair, abs=1e-5)
    assert t.wins == [sum(t.matrix[i][j] > 0.5 for i in range(3) if i != j) for j in range(3)]
    assert sorted(t.ranking) == [0, 1, 2]
    assert t.ranking == sorted(range(3), key=lambda j: (-t.wins[j], -t.mean_win_probability[j], j))


def test_reward_is_differentiable(reward_models):
    rm = reward_models("qwen2_5_vl")
    x = torch.rand(2, 56, 84, 3, requires_grad=True)
    reward = rm.reward(x, "a cat")
    assert reward.requires_grad and reward.shape == (2,)
    reward.sum().backward()
    assert x.grad is not None and x.grad.abs().sum() > 0
    assert rm.score(x.detach(), "a cat").scores == pytest.approx(reward.detach().tolist(), abs=1e-6)


def test_out_of_memory_splits_and_retries(reward_models, photo_paths, monkeypatch):
    rm = reward_models("qwen2_5_vl")
    expected = rm.score(photo_paths, "a cat", prefix_reuse=False).scores
    real_forward = rm.scorer._forward

    def flaky(rows, start=0, cache=None, **kw):
        if len(rows) > 1:
            raise torch.OutOfMemoryError("CUDA out of memory (simulated)")
        return real_forward(rows, start, cache, **kw)

    monkeypatch.setattr(rm.scorer, "_forward", flaky)
    before = rm.scorer.stats["oom_splits"]
    assert rm.score(photo_paths, "a cat", prefix_reuse=False).scores == pytest.approx(expected, abs=1e-5)
    assert rm.scorer.stats["oom_splits"] > before

    def always(rows, start=0, cache=None, **kw):
        raise torch.OutOfMemoryError("CUDA out of memory (simulated)")

    monkeypatch.setattr(rm.scorer, "_forward", always)
    with pytest.raises(RuntimeError, match="lower the pixel budget"):
        rm.score(photo_paths[:1], "a cat")


def test_token_budget_batches():
    from rewarddance.backend.scoring.scorer import Scorer

    batches = list(Scorer.token_batches([10, 50, 20, 50, 5], 100))
    assert sorted(i for b in batches for i in b) == [0, 1, 2, 3, 4]
    lengths = [10, 50, 20, 50, 5]
    assert all(len(b) * max(lengths[i] for i in b) <= 100 or len(b) == 1 for b in batches)


def test_video_file_through_pyav(reward_models, tmp_path):
    av = pytest.importorskip("av")
    import numpy as np

    path = tmp_path / "clip.mp4"
    with av.open(str(path), "w") as container:
        stream = container.add_stream("mpeg4", rate=8)
        stream.width, stream.height, stream.pix_fmt = 64, 48, "yuv420p"
        for i in range(8):
            frame = av.VideoFrame.from_ndarray(np.full((48, 64, 3), i * 30, dtype=np.uint8), format="rgb24")
            for packet in stream.encode(frame):
                container.mux(packet)
        for packet in stream.encode():
            container.mux(packet)
    from rewarddance.backend.media import load_visual_file

    clip = load_visual_file(path)
    assert isinstance(clip, Video) and clip.frames.shape[1:] == (48, 64, 3) and clip.fps == pytest.approx(8.0)
    assert clip.frames.shape[0] == 8
    assert 0 < reward_models("qwen2_vl").score([str(path)], "a fade").scores[0] < 1


def test_qwen3_video_prompt_has_one_block_per_temporal_patch(reward_models):
    rm = reward_models("qwen3_vl")
    clip = Video(torch.rand(8, 64, 64, 3), fps=4.0)
    from rewarddance.backend.scoring.prompts import pointwise_query as pq

    prepared = rm.scorer.prepare([pq(clip, "a cat", ScoringConfig())])[0]
    text = rm.vlm.tokenizer.decode(prepared.input_ids)
    start, end = text.index("<|vision_start|>"), text.rindex("<|vision_end|>")
    video_part = text[start - len("<0.2 seconds>") - 10 : end + len("<|vision_end|>")]
    # 8 frames at 4 fps sampled to 2 fps -> 4 frames -> 2 temporal patches, each "<t seconds>" + one block
    assert text.count("<|vision_start|>") == 2 and text.count("<|vision_end|>") == 2
    assert "seconds><|vision_start|>" in video_part and "<|vision_start|><0" not in text


def test_tournament_reuses_each_reference_prefix(reward_models, photo_paths):
    rm = reward_models("qwen2_5_vl")
    before = prefix_runs(rm)
    shared = rm.tournament(photo_paths[:4], "a cat")
    assert prefix_runs(rm) - before == 4  # one prefix per reference image (run, or cached by an earlier call)
    plain = rm.tournament(photo_paths[:4], "a cat", prefix_reuse=False)
    for row_a, row_b in zip(shared.matrix, plain.matrix):
        assert row_a == pytest.approx(row_b, abs=1e-4)


def test_prefix_cache_is_passed_without_deprecation_warnings(reward_models, photo_paths):
    """transformers >= 5.24 renamed the cache keyword; a pairwise run must not warn on every call."""
    import warnings

    rm = reward_models("qwen2_5_vl")
    before = prefix_runs(rm)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        rm.compare(photo_paths[1:3], photo_paths[0], "a cat")
    assert prefix_runs(rm) > before
    assert not [w for w in caught if "past_key_values" in str(w.message)], [str(w.message) for w in caught]
