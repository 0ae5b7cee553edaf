"""transformers' own LLaVA model and processor beside docread's reader for one tiny checkpoint: the
reference the native view is checked against (tests/test_native.py, tests/test_view_cli.py)."""

import numpy as np
import torch
from PIL import Image

import docread
from docread.model.presets import LLAVA_PROMPT
from docread.testing import IMAGE_MEAN, IMAGE_STD

QUESTION = "What is written here?"
PROMPT = LLAVA_PROMPT.replace("{question}", QUESTION)
MAX_NEW_TOKENS = 6


def random_image(width, height, seed=0):
    return Image.fromarray(np.random.default_rng(seed).integers(0, 256, (height, width, 3), dtype=np.uint8))


def hf_processor(path, kind):
    """transformers' own processor for the checkpoint. The tiny llava_next folder stores a CLIP image
    processor (AutoProcessor would not tile), so LLaVA-1.6's is built explicitly, as llava-hf ships it:
    LlavaNextImageProcessor with the config's pinpoints, patch size, "default" strategy, +1 for CLS."""
    from transformers import AutoConfig, AutoProcessor, AutoTokenizer, LlavaNextImageProcessorPil, LlavaNextProcessor

    if kind == "llava":
        return AutoProcessor.from_pretrained(path)
    config = AutoConfig.from_pretrained(path)
    side = config.vision_config.image_size
    images = LlavaNextImageProcessorPil(
        size={"shortest_edge": side},
        crop_size={"height": side, "width": side},
        image_mean=IMAGE_MEAN,
        image_std=IMAGE_STD,
        image_grid_pinpoints=config.image_grid_pinpoints,
    )
    return LlavaNextProcessor(
        image_processor=images,
        tokenizer=AutoTokenizer.from_pretrained(path),
        patch_size=config.vision_config.patch_size,
        vision_feature_select_strategy="default",
        num_additional_image_tokens=1,
    )


class Setup:
    """One kind's checkpoint folder, docread reader, transformers model and processor."""

    def __init__(self, path, kind):
        from transformers import LlavaForConditionalGeneration, LlavaNextForConditionalGeneration

        cls = LlavaForConditionalGeneration if kind == "llava" else LlavaNextForConditionalGeneration
        self.path, self.kind = path, kind
        self.reader = docread.load(str(path), device="cpu", quant="none")
        self.model = cls.from_pretrained(path, dtype=torch.float32).eval()
        self.processor = hf_processor(path, kind)

    def inputs(self, image):
        return self.processor(images=image, text=PROMPT, return_tensors="pt")

    def greedy(self, image):
        inputs = self.inputs(image)
        with torch.inference_mode():
            out = self.model.generate(**inputs, max_new_tokens=MAX_NEW_TOKENS, do_sample=False)
        new = out[0, inputs["input_ids"].shape[1] :].tolist()
        eos = self.processor.tokenizer.eos_token_id
        return (new[: new.index(eos)] if eos in new else new), inputs

    def image_tokens(self, image):
        return int((self.inputs(image)["input_ids"] == self.model.config.image_token_id).sum())
