"""Every registered VLM family declares the whole family contract, and its tiny checkpoint loads and scores."""

from __future__ import annotations

import json
from types import SimpleNamespace

import pytest
import torch
import transformers
from conftest import FAMILIES as CONFTEST_FAMILIES

from rewarddance.backend.vlm.base import VLMFamily
from rewarddance.backend.vlm.loading import load_vlm, read_preprocessor_config
from rewarddance.backend.vlm.registry import FAMILIES, family_for_config, family_named, family_names
from rewarddance.backend.vlm.tiny import FAMILY_NAMES, chat_template, write_tiny_checkpoint

BY_NAME = pytest.mark.parametrize("family", FAMILIES, ids=lambda f: f.name)


def test_family_lists_are_derived_from_the_registry():
    names = tuple(f.name for f in FAMILIES)
    assert names == ("qwen2_vl", "qwen2_5_vl", "qwen3_vl", "internvl")
    assert family_names() == names == FAMILY_NAMES
    assert CONFTEST_FAMILIES == list(names)
    model_types = [t for f in FAMILIES for t in f.model_types]
    assert len(set(model_types)) == len(model_types), "two families claim the same model_type"


def test_family_named_finds_each_family_and_names_the_choices():
    for family in FAMILIES:
        assert family_named(family.name) is family
    with pytest.raises(
        ValueError, match="unknown family 'llava'; choose one of qwen2_vl, qwen2_5_vl, qwen3_vl, internvl"
    ):
        family_named("llava")


def test_unknown_family_writes_nothing(tmp_path):
    with pytest.raises(ValueError, match="unknown family 'llava'"):
        write_tiny_checkpoint("llava", tmp_path / "t")
    assert not (tmp_path / "t").exists()


def test_base_family_defaults():
    class Bare(VLMFamily):
        name = "bare"
        model_class_name = "BareForConditionalGeneration"

    assert Bare.model_class_for("anything") == "BareForConditionalGeneration"
    assert Bare.mm_token_types == {} and Bare.special_tokens == () and Bare.tiny_token_names == {}
    with pytest.raises(NotImplementedError, match="the bare family declares no tiny test config"):
        Bare.tiny_config(None)
    with pytest.raises(NotImplementedError, match="the bare family declares no tiny preprocessor config"):
        Bare.tiny_processor_files()
    assert Bare(None, None, {}).token_types(torch.tensor([3, 4])).tolist() == [0, 0]


@BY_NAME
def test_family_declares_the_contract(family):
    assert family.name and family.model_types and family.model_class_name
    for model_type in family.model_types:
        assert family_for_config(SimpleNamespace(model_type=model_type)) is family
        assert hasattr(transformers, family.model_class_for(model_type)), model_type
    assert family.image_placeholder in family.special_tokens
    assert family.video_placeholder in family.special_tokens
    assert set(family.mm_token_types) <= set(family.special_tokens)
    assert set(family.tiny_token_names.values()) <= set(family.special_tokens)
    assert "{%" in family.tiny_chat_template
    assert "preprocessor_config.json" in family.tiny_processor_files()


def test_qwen3_moe_has_its_own_model_class():
    qwen3 = family_named("qwen3_vl")
    assert qwen3.model_class_for("qwen3_vl_moe") == "Qwen3VLMoeForConditionalGeneration"
    assert qwen3.model_class_for("qwen3_vl") == "Qwen3VLForConditionalGeneration"


@BY_NAME
def test_tiny_checkpoint_is_what_the_family_declares(family, tiny_dirs):
    ckpt = tiny_dirs[family.name]
    for name, contents in family.tiny_processor_files().items():
        assert json.loads((ckpt / name).read_text()) == contents, name
    assert (ckpt / "chat_template.jinja").read_text() == chat_template(family)
    tokenizer_config = json.loads((ckpt / "tokenizer_config.json").read_text())
    if family.tiny_token_names:  # otherwise transformers writes its own list of the added tokens there
        assert tokenizer_config["extra_special_tokens"] == family.tiny_token_names
    vlm = load_vlm(str(ckpt), dtype="fp32", device="cpu")
    assert type(vlm.family) is family
    assert type(vlm.model).__name__ == family.model_class_for(vlm.model.config.model_type)
    vocab = vlm.tokenizer.get_vocab()
    assert all(token in vocab for token in family.special_tokens)
    if family.name == "qwen3_vl":  # the only family whose checkpoints ship a video preprocessor config
        assert read_preprocessor_config(ckpt)["video"]["size"]["longest_edge"] == 25165824


@BY_NAME
def test_tiny_template_adds_the_declared_system_prompt(family, tiny_dirs):
    vlm = load_vlm(str(tiny_dirs[family.name]), dtype="fp32", device="cpu")
    messages = [{"role": "user", "content": [{"type": "image"}, {"type": "text", "text": "a cat?"}]}]
    text = vlm.tokenizer.apply_chat_template(
        messages, chat_template=vlm.chat_template, tokenize=False, add_generation_prompt=True
    )
    assert family.image_placeholder in text and text.endswith("<|im_start|>assistant\n")
    assert ("<|im_start|>system" in text) == bool(family.tiny_system_prompt)
    if family.tiny_system_prompt:
        assert family.tiny_system_prompt in text


@BY_NAME
def test_token_types_mark_the_declared_tokens(family, reward_models):
    fam = reward_models(family.name).vlm.family
    ids = torch.tensor([0, fam.token_id(family.image_placeholder), fam.token_id(family.video_placeholder), 0])
    expected = [0, family.mm_token_types.get(family.image_placeholder, 0)]
    expected += [family.mm_token_types.get(family.video_placeholder, 0), 0]
    assert fam.token_types(ids).tolist() == expected
    if family.name.startswith("qwen"):  # Qwen models take image (1) and video (2) token types; InternVL none
        assert expected == [0, 1, 2, 0]
    else:
        assert expected == [0, 0, 0, 0]


@BY_NAME
def test_tiny_checkpoint_scores_depend_on_the_image(family, reward_models, photo_paths):
    rm = reward_models(family.name)
    scores = rm.score(photo_paths[:3], "a cat").scores
    assert all(0.0 < s < 1.0 for s in scores)
    assert max(scores) - min(scores) > 1e-4, "the tiny model ignores the image"
