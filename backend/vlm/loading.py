"""Load a chat VLM checkpoint (local directory or hub id) with its tokenizer, chat template and family."""

from __future__ import annotations

import json
import os
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from ..devices import check_attention, resolve_device, resolve_dtype
from ..model_sources import download_command, hub_offline, looks_like_hub_id, source_problem
from .base import VisualOptions, VLMFamily
from .quantization import check_quantization, check_quantized_device, quantization_config, quantize_token_tables
from .registry import family_for_config

HUB_FILES = ["*.json", "*.safetensors", "*.jinja", "*.txt", "*.model", "*.tiktoken"]


class ModelLoadError(RuntimeError):
    """A checkpoint could not be found or loaded; the message says where to put the files."""


@dataclass
class LoadedVLM:
    """A loaded chat VLM: the transformers model, its tokenizer and chat template, and its family."""

    model: Any
    tokenizer: Any
    chat_template: str
    family: VLMFamily
    path: str
    quantization: str = "none"  # none, int8 or nf4 (vlm/quantization.py)
    execution_device: torch.device | None = None  # set when a host streams weights (ComfyUI's partial loading)

    @property
    def device(self) -> torch.device:
        """Where inputs go: the execution device when one is set, else that of the input embeddings (also under
        a device_map)."""
        if self.execution_device is not None:
            return self.execution_device
        return self.model.get_input_embeddings().weight.device

    @property
    def dtype(self) -> torch.dtype:
        """Dtype of the model's floating-point weights (a quantised embedding records the dtype it returns)."""
        embedding = self.model.get_input_embeddings()
        recorded = getattr(embedding, "dtype", None)  # bitsandbytes' Embedding8bit / EmbeddingNF4
        return recorded if isinstance(recorded, torch.dtype) else embedding.weight.dtype


def resolve_checkpoint(model: str, local_files_only: bool | None = None) -> Path:
    """A local directory for `model`: the directory itself, or a hub snapshot (downloaded when online)."""
    if not isinstance(model, (str, os.PathLike)) or not str(model).strip():
        raise ModelLoadError("model must be a checkpoint directory or a hub id like Qwen/Qwen2.5-VL-7B-Instruct")
    path = Path(model).expanduser()
    if path.is_dir():
        if not (path / "config.json").is_file():
            raise ModelLoadError(f"{str(path)!r} has no config.json; point --model at the checkpoint directory itself")
        return path
    text = str(model)
    if not looks_like_hub_id(text):
        raise ModelLoadError(source_problem(text, "checkpoint") or f"{text!r} is not a checkpoint directory")
    from huggingface_hub import snapshot_download

    offline = local_files_only or hub_offline()
    try:
        return Path(snapshot_download(text, allow_patterns=HUB_FILES, local_files_only=bool(offline)))
    except Exception as exc:
        raise ModelLoadError(
            f"model {text!r} is not a local directory and could not be fetched from the Hugging Face hub "
            f"({type(exc).__name__}). Offline? Download it where there is internet, e.g. "
            f"`{download_command(text)}`, copy the folder here "
            "(for ComfyUI: into ComfyUI/models/reward_models/) and pass that directory as --model."
        ) from exc


def read_preprocessor_config(path: Path) -> dict:
    """The image preprocessing settings (preprocessor_config.json, or the processor_config.json section)."""
    settings: dict = {}
    processor_file = path / "processor_config.json"
    if processor_file.is_file():
        data = json.loads(processor_file.read_text())
        settings.update(data.get("image_processor", {}))
        if isinstance(data.get("video_processor"), dict):
            settings["video_processor"] = data["video_processor"]
        if "image_seq_length" in data:
            settings["image_seq_length"] = data["image_seq_length"]
    pre_file = path / "preprocessor_config.json"
    if pre_file.is_file():
        settings.update(json.loads(pre_file.read_text()))
    video_file = path / "video_preprocessor_config.json"
    if video_file.is_file():
        settings["video"] = json.loads(video_file.read_text())
    elif isinstance(settings.get("video_processor"), dict):
        settings["video"] = settings["video_processor"]
    return settings


def read_chat_template(path: Path, tokenizer: Any) -> str:
    """The chat template: the processor's (chat_template.json/.jinja) first, then the tokenizer's."""
    jinja = path / "chat_template.jinja"
    if jinja.is_file():
        return jinja.read_text()
    js = path / "chat_template.json"
    if js.is_file():
        return json.loads(js.read_text())["chat_template"]
    template = getattr(tokenizer, "chat_template", None)
    if isinstance(template, dict):
        template = template.get("default")
    if not template:
        raise ModelLoadError(f"{str(path)!r} has no chat template (chat_template.jinja/.json or in the tokenizer)")
    return template


def model_class(family: VLMFamily, config: Any) -> Any:
    """The transformers class for the checkpoint, with a clear error on too old a transformers."""
    import transformers

    name = family.model_class_for(config.model_type)
    cls = getattr(transformers, name, None)
    if cls is None:
        raise ModelLoadError(
            f"transformers {transformers.__version__} has no {name}; upgrade with `pip install -U transformers`"
        )
    return cls


def load_vlm(
    model: str,
    dtype: str | torch.dtype | None = "auto",
    device: str | None = "auto",
    attn_implementation: str | None = None,
    device_map: str | dict | None = None,
    options: VisualOptions | None = None,
    trust_remote_code: bool = False,
    local_files_only: bool | None = None,
    quantization: str | None = "none",
    exact_token_ids: Callable[[Any, Path], Iterable[int]] | None = None,
) -> LoadedVLM:
    """Load a supported chat VLM for scoring: family from its config, weights from safetensors, eval mode;
    `quantization` int8 / nf4 quantises the language model's linear layers and token tables with bitsandbytes,
    keeping exact the lm_head rows of `exact_token_ids(tokenizer, checkpoint folder)` (the tokens scores are read
    from; RewardModel passes them)."""
    from transformers import AutoConfig, AutoTokenizer

    check_attention(attn_implementation)
    quantization = check_quantization(quantization)
    device = resolve_device(device) if device_map is None else None
    torch_dtype = resolve_dtype(dtype, device or "cuda")
    if quantization != "none":
        check_quantized_device(quantization, device or "cuda", torch_dtype)
    path = resolve_checkpoint(model, local_files_only)
    try:
        config = AutoConfig.from_pretrained(path, trust_remote_code=trust_remote_code)
    except Exception as exc:
        raise ModelLoadError(f"cannot read the config of {str(path)!r}: {exc}") from exc
    family_cls = family_for_config(config)
    tokenizer = AutoTokenizer.from_pretrained(path, trust_remote_code=trust_remote_code)
    family = family_cls(config, tokenizer, read_preprocessor_config(path), options)
    cls = model_class(family, config)
    kwargs: dict[str, Any] = {"use_safetensors": True, "trust_remote_code": trust_remote_code}
    kwargs["dtype" if _accepts_dtype_kwarg() else "torch_dtype"] = torch_dtype
    if attn_implementation:
        kwargs["attn_implementation"] = attn_implementation
    if quantization != "none":
        kwargs["quantization_config"] = quantization_config(quantization, torch_dtype)
        device_map = device_map if device_map is not None else {"": device}  # quantised weights load in place
    if device_map is not None:
        kwargs["device_map"] = device_map
    try:
        vlm = cls.from_pretrained(path, **kwargs)
    except (OSError, ValueError) as exc:
        raise ModelLoadError(f"cannot load weights from {str(path)!r}: {exc}") from exc
    if "device_map" not in kwargs:
        vlm = vlm.to(device)
    if quantization != "none":
        exact = exact_token_ids(tokenizer, path) if exact_token_ids is not None else ()
        quantize_token_tables(vlm, quantization, torch_dtype, exact)
    vlm.eval().requires_grad_(False)
    if tokenizer.pad_token_id is None:
        tokenizer.pad_token = tokenizer.eos_token
    return LoadedVLM(vlm, tokenizer, read_chat_template(path, tokenizer), family, str(path), quantization=quantization)


def _accepts_dtype_kwarg() -> bool:
    """transformers >= 4.56 takes `dtype=`; older releases only `torch_dtype=`."""
    import transformers
    from packaging.version import Version

    return Version(transformers.__version__) >= Version("4.56")
