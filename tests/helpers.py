"""Test helpers shared by several test modules."""

import numpy as np
from PIL import Image as PILImage


def random_image(h: int, w: int, seed: int = 0) -> PILImage.Image:
    """A smooth random RGB PIL image (so resizing differences stay realistic)."""
    rng = np.random.default_rng(seed)
    small = rng.integers(0, 256, size=(max(2, h // 8), max(2, w // 8), 3), dtype=np.uint8)
    return PILImage.fromarray(small).resize((w, h), PILImage.BILINEAR)


def pil_image_processor(family: str, ckpt):
    """The checkpoint's PIL-based transformers image processor (the `*Pil` class in transformers 5,
    the slow PIL/NumPy class in 4.5x), built from its preprocessor_config.json."""
    import json

    cfg = json.loads((ckpt / "preprocessor_config.json").read_text())
    cfg.pop("image_processor_type")
    if family == "internvl":
        try:
            from transformers.models.got_ocr2.image_processing_pil_got_ocr2 import GotOcr2ImageProcessorPil as cls
        except ImportError:
            from transformers.models.got_ocr2.image_processing_got_ocr2 import GotOcr2ImageProcessor as cls
    else:
        try:
            from transformers.models.qwen2_vl.image_processing_pil_qwen2_vl import Qwen2VLImageProcessorPil as cls
        except ImportError:
            from transformers.models.qwen2_vl.image_processing_qwen2_vl import Qwen2VLImageProcessor as cls
    return cls(**cfg)
