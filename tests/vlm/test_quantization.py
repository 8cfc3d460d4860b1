"""Quantised judges (int8 / nf4 through bitsandbytes) on the tiny checkpoints: what is quantised (linear layers,
token embedding, lm_head), what is kept (vision tower, the answer tokens' lm_head rows, exactly), tied embeddings
left with no full-precision copy, scores and generation, gradients refused and the errors for bad values, devices
and a missing bitsandbytes."""

from __future__ import annotations

import json
import math
import shutil
import sys

import pytest
import torch
from conftest import FAMILIES

from rewarddance.backend.memory_estimate import estimate_memory, measured_weight_bytes
from rewarddance.backend.vlm.quantization import (
    KEEP_UNQUANTIZED,
    ExactRowsHead,
    check_quantization,
    check_quantized_device,
    quantized_module_names,
)

pytest.importorskip("bitsandbytes")


def spearman(a: list[float], b: list[float]) -> float:
    """Spearman rank correlation (no ties in these scores)."""
    ra = {i: r for r, i in enumerate(sorted(range(len(a)), key=a.__getitem__))}
    rb = {i: r for r, i in enumerate(sorted(range(len(b)), key=b.__getitem__))}
    n = len(a)
    return 1 - 6 * sum((ra[i] - rb[i]) ** 2 for i in range(n)) / (n * (n * n - 1))


TABLE_CLASSES = {"int8": ("Embedding8bit", "Linear8bitLt"), "nf4": ("EmbeddingNF4", "Linear4bit")}


@pytest.fixture(scope="module")
def photos(photo_paths):
    """The sample photos as small PIL images."""
    from PIL import Image

    return [Image.open(p).convert("RGB").resize((64, 64)) for p in photo_paths]


@pytest.mark.parametrize("family", FAMILIES)
@pytest.mark.parametrize("quantization", ["int8", "nf4"])
def test_quantised_judge_keeps_vision_and_head_and_scores(family, quantization, tiny_dirs, reward_models, photos):
    from rewarddance.backend import RewardModel

    rm = RewardModel.from_pretrained(str(tiny_dirs[family]), dtype="fp32", device="cpu", quantization=quantization)
    names = quantized_module_names(rm.vlm.model)
    assert names and all(
        "language_model" in n or n.startswith("model.layers") or n == "lm_head.quantized" for n in names
    )
    assert not any(part in n.split(".") for n in names for part in KEEP_UNQUANTIZED)
    embedding, head = rm.vlm.model.get_input_embeddings(), rm.vlm.model.get_output_embeddings()
    assert type(embedding).__name__ == TABLE_CLASSES[quantization][0] and isinstance(head, ExactRowsHead)
    assert type(head.quantized).__name__ == TABLE_CLASSES[quantization][1] and rm.vlm.dtype == torch.float32
    assert rm.vlm.quantization == quantization and rm.differentiable is False
    scores = rm.score(photos, "a photo").scores
    full = reward_models(family).score(photos, "a photo").scores
    assert all(math.isfinite(s) and 0 < s < 1 for s in scores)
    assert max(abs(a - b) for a, b in zip(scores, full)) < 0.05
    if quantization == "int8":  # int8 barely moves random tiny weights' scores; nf4 is noisier on them
        assert spearman(scores, full) >= 0.6


def test_quantised_judge_refuses_gradients(tiny_dirs):
    from rewarddance.backend import RewardModel

    rm = RewardModel.from_pretrained(str(tiny_dirs["qwen2_5_vl"]), dtype="fp32", device="cpu", quantization="nf4")
    images = torch.rand(1, 56, 56, 3, requires_grad=True)
    with pytest.raises(ValueError, match="quantization 'nf4'.*no reward gradients.*refl"):
        rm.reward(images, "a photo")
    assert rm.reward(images.detach(), "a photo").shape == (1,)  # scores without gradients still work


@pytest.mark.parametrize("bad", ["int4", "fp8", 4, ""])
def test_bad_quantization_names_the_choices(bad):
    with pytest.raises(ValueError, match="quantization must be one of none, int8, nf4"):
        check_quantization(bad)
    assert check_quantization(None) == "none" and check_quantization("NF4") == "nf4"


def test_unsupported_device_and_dtype_say_what_works():
    with pytest.raises(ValueError, match="CUDA GPUs and on the CPU.*not on 'mps'"):
        check_quantized_device("nf4", "mps", torch.bfloat16)
    with pytest.raises(ValueError, match="fp32 or bf16, not fp16"):
        check_quantized_device("int8", "cpu", torch.float16)
    check_quantized_device("nf4", "cpu", torch.bfloat16)


def test_missing_bitsandbytes_names_the_package(tiny_dirs, monkeypatch):
    from rewarddance.backend import RewardModel
    from rewarddance.backend.dependencies import MissingDependency

    monkeypatch.setitem(sys.modules, "bitsandbytes", None)  # import now fails as if it were not installed
    with pytest.raises(MissingDependency, match="bitsandbytes package.*`pip install bitsandbytes`"):
        RewardModel.from_pretrained(str(tiny_dirs["qwen2_vl"]), device="cpu", quantization="int8")


def checkpoint_tensors(path) -> dict[str, torch.Tensor]:
    """The checkpoint's stored (unquantised) tensors."""
    from safetensors.torch import load_file

    return {k: v for f in sorted(path.glob("*.safetensors")) for k, v in load_file(f).items()}


def table(tensors: dict[str, torch.Tensor], part: str) -> torch.Tensor:
    """The one stored tensor whose name contains `part` (embed_tokens.weight, lm_head.weight)."""
    (name,) = [k for k in tensors if part in k]
    return tensors[name]


def read_tokens(rm) -> list[int]:
    """The yes/no ids the default reading uses (with and without a leading space)."""
    ids = []
    for cot in ("none", "reasoning_first"):
        tokens = rm.answer_tokens(rm.settings({"cot": cot}))
        ids += [*tokens.yes_ids, *tokens.no_ids]
    return sorted(set(ids))


def text_forward(model, ids: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """(logits, final hidden states) of a text-only forward."""
    with torch.no_grad():
        return model(input_ids=ids).logits, model.model(input_ids=ids).last_hidden_state


@pytest.mark.parametrize("quantization", ["int8", "nf4"])
def test_answer_rows_are_exact(quantization, tiny_dirs):
    """The answer tokens' logits are the checkpoint's unquantised lm_head rows times the same hidden state; the other
    logits come from the quantised head (full vocabulary, for generation)."""
    from rewarddance.backend import RewardModel

    path = tiny_dirs["qwen2_5_vl"]
    rm = RewardModel.from_pretrained(str(path), dtype="fp32", device="cpu", quantization=quantization)
    head = rm.vlm.model.get_output_embeddings()
    exact_ids = head.token_ids.tolist()
    assert set(read_tokens(rm)) <= set(exact_ids)
    digits = [rm.vlm.tokenizer(d, add_special_tokens=False)["input_ids"][0] for d in "12345"]
    assert set(digits) <= set(exact_ids)  # the unifiedreward judge's score and verdict tokens
    weight = table(checkpoint_tensors(path), "lm_head.weight")
    ids = torch.tensor([rm.vlm.tokenizer("Is this a photo of a cat? Yes", add_special_tokens=False)["input_ids"]])
    logits, hidden = text_forward(rm.vlm.model, ids)
    assert logits.shape[-1] == weight.shape[0]
    torch.testing.assert_close(logits[..., exact_ids], hidden @ weight[exact_ids].T, atol=1e-5, rtol=0)
    others = [i for i in range(weight.shape[0]) if i not in exact_ids]
    assert not torch.allclose(logits[..., others], hidden @ weight[others].T, atol=1e-5)  # quantised there
    state = rm.vlm.model.state_dict()  # sizing by state dict works (ComfyUI's model_size): quantised tables
    stored = sum(t.nbytes for t in state.values())
    assert abs(stored / measured_weight_bytes(rm.vlm.model) - 1) < 0.02  # all but the exact rows (not saved)


@pytest.fixture(scope="module")
def tied_dir(tiny_dirs, tmp_path_factory):
    """The tiny Qwen2.5-VL checkpoint with tied embeddings (lm_head not stored; config says tie_word_embeddings)."""
    from safetensors.torch import save_file

    out = tmp_path_factory.mktemp("tied") / "qwen2_5_vl_tied"
    shutil.copytree(tiny_dirs["qwen2_5_vl"], out)
    tensors = checkpoint_tensors(out)
    for f in out.glob("*.safetensors"):
        f.unlink()
    save_file({k: v for k, v in tensors.items() if "lm_head" not in k}, out / "model.safetensors")
    config = json.loads((out / "config.json").read_text())
    config["tie_word_embeddings"] = config["text_config"]["tie_word_embeddings"] = True
    (out / "config.json").write_text(json.dumps(config))
    return out


@pytest.mark.parametrize("quantization", ["int8", "nf4"])
def test_tied_embeddings_leave_no_full_precision_table(quantization, tied_dir):
    from rewarddance.backend import RewardModel

    full = RewardModel.from_pretrained(str(tied_dir), dtype="fp32", device="cpu")
    assert full.vlm.model.lm_head.weight is full.vlm.model.get_input_embeddings().weight  # tied, as loaded
    rm = RewardModel.from_pretrained(str(tied_dir), dtype="fp32", device="cpu", quantization=quantization)
    model = rm.vlm.model
    embedding = table(checkpoint_tensors(tied_dir), "embed_tokens.weight")
    vocab, hidden = embedding.shape

    def full_tables() -> list[str]:
        tensors = [*model.named_parameters(remove_duplicate=False), *model.named_buffers(remove_duplicate=False)]
        return [n for n, t in tensors if t.is_floating_point() and t.dim() == 2 and t.shape[0] == vocab]

    assert full_tables() == []
    model.tie_weights()  # transformers re-ties on request (and when resizing): nothing to tie any more
    assert full_tables() == [] and isinstance(model.get_output_embeddings(), ExactRowsHead)
    assert model.config.tie_word_embeddings is False
    estimate = estimate_memory(str(tied_dir), "fp32", quantization).weight_bytes  # lm_head's own quantised copy
    assert abs(estimate / measured_weight_bytes(model) - 1) < 0.15
    exact_ids = model.get_output_embeddings().token_ids.tolist()
    ids = torch.tensor([rm.vlm.tokenizer("a photo of a dog. No", add_special_tokens=False)["input_ids"]])
    logits, last = text_forward(model, ids)
    torch.testing.assert_close(logits[..., exact_ids], last @ embedding[exact_ids].T, atol=1e-5, rtol=0)


@pytest.mark.parametrize("quantization", ["int8", "nf4"])
def test_quantised_judge_generates_its_reasoning(quantization, tiny_dirs, photos):
    from rewarddance.backend import RewardModel

    rm = RewardModel.from_pretrained(
        str(tiny_dirs["qwen2_5_vl"]), dtype="fp32", device="cpu", quantization=quantization
    )
    result = rm.score(photos[:2], "a photo", cot="reasoning_first", reason_tokens=6, reasons=True)
    assert len(result.scores) == 2 and all(0 < s < 1 for s in result.scores)
    assert len(result.reasons) == 2 and all(isinstance(r, str) and r for r in result.reasons)
