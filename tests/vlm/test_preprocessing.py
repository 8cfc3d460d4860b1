"""Preprocessing equals the checkpoints' own transformers processors (PIL path) and follows them (tensor path)."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from helpers import pil_image_processor, random_image
from PIL import Image as PILImage

from rewarddance.backend.media import Image, MediaError, image_from_tensor, load_image_file, pil_to_tensor
from rewarddance.backend.vlm.loading import load_vlm
from rewarddance.backend.vlm.resize import PIL_FILTERS, resample_weights, resize_pil, resize_tensor

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


# (in (h, w), out (h, w)): upsampling to Qwen's 56 px minimum, mixed, downsampling, one axis only.
RESIZES = [
    ((16, 16), (56, 56)),
    ((20, 20), (56, 56)),
    ((37, 23), (56, 84)),
    ((300, 300), (112, 112)),
    ((1000, 600), (448, 252)),
    ((64, 64), (64, 30)),
]


def _uint8_noise(h: int, w: int, seed: int) -> np.ndarray:
    """Uniform uint8 RGB noise (the worst case for resampling differences)."""
    return np.random.default_rng(seed).integers(0, 256, size=(h, w, 3), dtype=np.uint8)


def _chw(arr: np.ndarray) -> torch.Tensor:
    """uint8 [H, W, 3] -> float [1, 3, H, W] in [0, 1]."""
    return torch.from_numpy(arr.copy()).permute(2, 0, 1)[None].float() / 255


@pytest.mark.parametrize("resample", [1, 2, 3])
@pytest.mark.parametrize("size_in, size_out", RESIZES)
def test_resize_tensor_matches_pil_within_its_rounding(size_in, size_out, resample):
    arr = _uint8_noise(*size_in, seed=sum(size_in))
    ref = resize_pil(PILImage.fromarray(arr), *size_out, resample)
    ours = resize_tensor(_chw(arr), *size_out, resample)[0]
    # PIL rounds to uint8 after each pass: half a level after the horizontal pass, carried through the vertical
    # weights (their absolute row sum, above 1 where lobes are negative), plus half a level at the end.
    vertical = (
        np.abs(resample_weights(size_in[0], size_out[0], resample)).sum(1).max() if size_in[0] != size_out[0] else 0
    )
    bound = (0.5 + 0.5 * vertical) / 255 + 1e-5
    diff = (ours - ref).abs().max().item()
    assert diff <= bound, f"max difference {diff * 255:.4f}/255 above {bound * 255:.4f}/255"
    assert diff <= 1.14 / 255  # measured worst over these cases: 1.137/255 (Lanczos, 20 -> 56)
    assert (ours - ref).abs().mean().item() < 0.33 / 255


def _pil_fixed_point_resize(arr: np.ndarray, height: int, width: int, resample: int) -> np.ndarray:
    """PIL's uint8 arithmetic on our weights: 22-bit fixed-point weights, rounding and clipping after each pass."""

    def one_pass(x: np.ndarray, weights: np.ndarray, axis: int) -> np.ndarray:
        scaled = weights * (1 << 22)
        fixed = np.where(scaled < 0, np.trunc(scaled - 0.5), np.trunc(scaled + 0.5)).astype(np.int64)
        acc = np.tensordot(np.moveaxis(x.astype(np.int64), axis, -1), fixed.T, axes=1) + (1 << 21)
        return np.moveaxis(np.clip(acc >> 22, 0, 255), -1, axis)

    out = arr
    if arr.shape[1] != width:
        out = one_pass(out, resample_weights(arr.shape[1], width, resample), 1)
    if arr.shape[0] != height:
        out = one_pass(out, resample_weights(arr.shape[0], height, resample), 0)
    return out


@pytest.mark.parametrize("resample", [1, 2, 3, 4, 5])
@pytest.mark.parametrize("size_in, size_out", [((16, 16), (56, 56)), ((37, 23), (56, 84)), ((97, 413), (61, 17))])
def test_resample_weights_are_pils_exactly(size_in, size_out, resample):
    arr = _uint8_noise(*size_in, seed=resample)
    ref = np.asarray(PILImage.fromarray(arr).resize(size_out[::-1], PIL_FILTERS[resample]))
    assert np.array_equal(_pil_fixed_point_resize(arr, *size_out, resample), ref)


@pytest.mark.parametrize("resample", [1, 2, 3, 4, 5])
def test_resample_weights_rows_sum_to_one(resample):
    for n_in, n_out in [(16, 56), (300, 112), (7, 7)]:
        w = resample_weights(n_in, n_out, resample)
        assert w.shape == (n_out, n_in)
        assert np.allclose(w.sum(1), 1.0)
    assert np.allclose(resample_weights(9, 9, resample), np.eye(9))


def test_resample_weights_reject_empty_sizes():
    with pytest.raises(ValueError, match="at least 1"):
        resample_weights(16, 0)


@pytest.mark.parametrize("resample", [0, 1, 2, 3])
def test_resize_tensor_gradient_flows(resample):
    x = torch.rand(2, 3, 20, 30, requires_grad=True)
    resize_tensor(x, 56, 28, resample).square().sum().backward()
    assert x.grad is not None and x.grad.abs().sum() > 0


def test_resize_tensor_identity_and_dtype():
    x = torch.rand(1, 3, 56, 84)
    assert resize_tensor(x, 56, 84) is x
    half = resize_tensor(x.half(), 28, 42)
    assert half.dtype == torch.float16 and half.shape == (1, 3, 28, 42)
    assert torch.allclose(half.float(), resize_tensor(x, 28, 42), atol=1e-3)


def test_resize_tensor_unknown_code_is_bicubic_like_pil_path():
    x = torch.rand(1, 3, 16, 16)
    assert torch.equal(resize_tensor(x, 56, 56, 99), resize_tensor(x, 56, 56, 3))


def test_file_and_tensor_of_the_same_picture_score_the_same(reward_models):
    # Black/white noise exaggerates resampling differences; the old torch bicubic path gave relative score
    # differences of 2.2%, 2.0%, 4.4% and 0.67% on these four images, PIL's filters in torch give at most 0.093%
    # (the rest is PIL's uint8 rounding).
    rm = reward_models("qwen2_5_vl")
    for seed in range(4):
        arr = (np.random.default_rng(seed).integers(0, 2, size=(16, 16, 3)) * 255).astype(np.uint8)
        from_pil = rm.score([PILImage.fromarray(arr)], "a cat").scores[0]
        from_tensor = rm.score(torch.from_numpy(arr.copy()).float()[None] / 255, "a cat").scores[0]
        assert from_tensor == pytest.approx(from_pil, rel=2e-3), f"seed {seed}"


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
