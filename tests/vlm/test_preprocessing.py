"""Preprocessing equals the checkpoints' own transformers processors (PIL path) and follows them (tensor path)."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from helpers import pil_image_processor, random_image
from PIL import Image as PILImage

from rewarddance.backend.media import Image, MediaError, image_from_tensor, load_image_file, pil_to_tensor
from rewarddance.backend.vlm.loading import load_vlm
from rewarddance.backend.vlm.resize import resize_pil, resize_tensor

# (height, width): exact multiples, rounding, strong aspect ratios, up-scaling below min_pixels, down-scaling.
SIZES = [(224, 224), (300, 500), (97, 413), (40, 60), (1000, 300), (513, 257)]


def hf_qwen_processor(ckpt):
    return pil_image_processor("qwen", ckpt)


def hf_internvl_processor(ckpt):
    return pil_image_processor("internvl", ckpt)


@pytest.fixture(scope="module")
def families(tiny_dirs):
    return {f: load_vlm(str(d), dtype="fp32", device="cpu").family for f, d in tiny_dirs.items()}


@pytest.mark.parametrize("family", ["qwen2_vl", "qwen2_5_vl", "qwen3_vl"])
@pytest.mark.parametrize("size", SIZES)
def test_qwen_pil_path_matches_processor(families, tiny_dirs, family, size):
    import transformers

    if family == "qwen3_vl" and transformers.__version__.startswith("4."):
        pytest.skip(
            "transformers 4.5x's slow Qwen2VLImageProcessor ignores size['longest_edge'], which Qwen3-VL "
            "configs use; real Qwen3-VL runs its fast processor there"
        )
    img = random_image(*size, seed=size[0])
    ref = hf_qwen_processor(tiny_dirs[family])(images=[img], return_tensors="pt")
    ours = families[family].encode_images([Image(pil=img)])[0]
    assert ours.grid_thw.tolist() == ref["image_grid_thw"].tolist()
    assert ours.pixel_values.shape == ref["pixel_values"].shape
    assert torch.allclose(ours.pixel_values, ref["pixel_values"].float(), atol=1e-4)


@pytest.mark.parametrize("size", SIZES)
def test_internvl_pil_path_matches_processor(families, tiny_dirs, size):
    img = random_image(*size, seed=size[1])
    ref = hf_internvl_processor(tiny_dirs["internvl"])(images=[img], return_tensors="pt")
    ours = families["internvl"].encode_images([Image(pil=img)])[0]
    assert ours.meta["tiles"] == int(ref["num_patches"][0])
    assert torch.allclose(ours.pixel_values, ref["pixel_values"].float(), atol=1e-4)


def _unnormalize(pixels: torch.Tensor, family) -> torch.Tensor:
    """Back to [0, 1] values from a family's normalised output, channel-first layout kept."""
    mean, std = torch.tensor(family.mean), torch.tensor(family.std)
    if pixels.ndim == 2:  # Qwen flat patches: [N, C * T * p * p], channel outermost
        pixels = pixels.reshape(pixels.shape[0], 3, -1)
        return pixels * std.view(1, 3, 1) + mean.view(1, 3, 1)
    return pixels * std.view(1, 3, 1, 1) + mean.view(1, 3, 1, 1)


@pytest.mark.parametrize("family", ["qwen2_5_vl", "qwen3_vl", "internvl"])
@pytest.mark.parametrize("size", SIZES)
def test_tensor_path_follows_processor(families, family, size):
    fam = families[family]
    img = random_image(*size, seed=7)
    tensor = pil_to_tensor(img)
    ours = fam.encode_images([image_from_tensor(tensor)])[0]
    ref = fam.encode_images([Image(pil=img)])[0]
    assert ours.pixel_values.shape == ref.pixel_values.shape
    if ours.grid_thw is not None:
        assert ours.grid_thw.tolist() == ref.grid_thw.tolist()
    diff = (_unnormalize(ours.pixel_values, fam) - _unnormalize(ref.pixel_values, fam)).abs().mean()
    assert diff <= 1 / 255, f"mean abs difference {diff:.5f} above 1/255"


def test_tensor_path_is_differentiable(families):
    fam = families["qwen2_5_vl"]
    x = torch.rand(2, 100, 140, 3, requires_grad=True)
    encoded = fam.encode_images([image_from_tensor(x[0]), image_from_tensor(x[1])])
    loss = sum(e.pixel_values.square().sum() for e in encoded)
    loss.backward()
    assert x.grad is not None and x.grad.abs().sum() > 0


def test_tensor_batch_is_resized_together_and_matches_single(families):
    fam = families["qwen3_vl"]
    x = torch.rand(3, 90, 120, 3)
    together = fam.encode_images([image_from_tensor(t) for t in x])
    alone = fam.encode_images([image_from_tensor(x[1])])[0]
    assert torch.allclose(together[1].pixel_values, alone.pixel_values, atol=1e-6)


def test_pixel_budget_options_change_grid(tiny_dirs):
    from rewarddance.backend.vlm.base import VisualOptions

    small = load_vlm(
        str(tiny_dirs["qwen2_5_vl"]), dtype="fp32", device="cpu", options=VisualOptions(max_pixels=56 * 56 * 4)
    ).family
    enc = small.encode_images([Image(pil=random_image(400, 400))])[0]
    h, w = enc.grid_thw[0, 1:].tolist()
    assert h * w * 14 * 14 <= 56 * 56 * 4


def test_resize_functions_agree_on_downscale():
    img = random_image(300, 400, seed=3)
    a = resize_pil(img, 150, 200)
    b = resize_tensor(pil_to_tensor(img).permute(2, 0, 1)[None], 150, 200)[0]
    assert (a - b).abs().mean() < 1 / 255


@pytest.mark.parametrize("mode", ["L", "RGBA", "I;16", "P", "LA", "CMYK"])
def test_file_modes_are_converted(tmp_path, mode):
    rgb = random_image(32, 48)
    if mode == "I;16":
        arr = np.asarray(rgb.convert("L"), dtype=np.uint16) * 257
        img = PILImage.fromarray(arr)
        assert img.mode.startswith("I;16")
    else:
        img = rgb.convert(mode)
    path = tmp_path / ("x.tif" if mode == "CMYK" else "x.png")
    img.save(path)
    loaded = load_image_file(path)
    assert loaded.pil.mode == "RGB" and loaded.pil.size == (48, 32)
    if mode == "I;16":
        expected = np.asarray(rgb.convert("L"))
        assert np.abs(np.asarray(loaded.pil)[..., 0].astype(int) - expected).max() <= 1


def test_rgba_transparent_becomes_white(tmp_path):
    img = PILImage.new("RGBA", (8, 8), (255, 0, 0, 0))
    img.save(tmp_path / "t.png")
    assert np.asarray(load_image_file(tmp_path / "t.png").pil)[0, 0].tolist() == [255, 255, 255]


@pytest.mark.parametrize(
    "bad, message",
    [
        (torch.rand(3, 64, 64), "expected an image tensor"),
        (torch.rand(64, 64, 5), "expected an image tensor"),
        (torch.randint(0, 255, (8, 8, 3)), "float values"),
        (torch.rand(0, 8, 3), "empty side"),
    ],
)
def test_bad_tensors_are_rejected(bad, message):
    with pytest.raises(MediaError, match=message):
        image_from_tensor(bad)


def test_unreadable_and_missing_files(tmp_path):
    (tmp_path / "broken.png").write_bytes(b"not an image")
    with pytest.raises(MediaError, match="not a readable image"):
        load_image_file(tmp_path / "broken.png")
    with pytest.raises(MediaError, match="does not exist"):
        load_image_file(tmp_path / "missing.png")


def test_extreme_aspect_ratio_rejected(families):
    with pytest.raises(ValueError, match="aspect ratio"):
        families["qwen2_5_vl"].encode_images([Image(pil=random_image(2, 900))])


def test_exif_orientation_and_trns_transparency(tmp_path):
    img = random_image(40, 60)
    exif = PILImage.Exif()
    exif[0x0112] = 6  # rotate 90 degrees on display
    img.save(tmp_path / "rotated.jpg", exif=exif)
    assert load_image_file(tmp_path / "rotated.jpg").pil.size == (40, 60)
    gray = PILImage.new("L", (4, 4), 0)
    gray.info["transparency"] = 0
    gray.save(tmp_path / "trns.png", transparency=0)
    assert np.asarray(load_image_file(tmp_path / "trns.png").pil)[0, 0].tolist() == [255, 255, 255]


@pytest.mark.parametrize(
    "frames, height, width", [(32, 720, 1280), (8, 720, 1280), (32, 128, 128), (4, 20, 300), (16, 1080, 1920)]
)
def test_qwen3_video_budget_counts_all_frames_like_transformers(families, frames, height, width):
    import transformers
    from transformers.models.qwen3_vl.video_processing_qwen3_vl import smart_resize as hf_video_smart_resize

    if min(height, width) < 32 and transformers.__version__.startswith("4."):
        pytest.skip("transformers 4.5x refuses frames smaller than one 32 px patch; 5.x (which we follow) upscales")
    fam = families["qwen3_vl"]
    video = fam.preprocessor["video"]["size"]
    expected = hf_video_smart_resize(frames, height, width, 2, 32, video["shortest_edge"], video["longest_edge"])
    assert fam.video_target_size(frames, height, width) == expected
