"""Random llava-hf checkpoints built without any download: the real file layout and classes of
llava-hf/llava-1.5-7b-hf and llava-v1.6-vicuna-7b-hf, with a small trained BPE tokenizer.

Used by the tests, by `docread bench speed --synthetic` and by the training experiment. The
default shapes are toy-sized (CLIP width 32, 6 layers, 336 px at patch 42 -> 8x8 = 64 tokens a
view; LLaMA width 64, 2 layers, context 4096); pass `vision=`/`text=` for others.
"""

from __future__ import annotations

from pathlib import Path

import torch

CORPUS = [
    "What is written here? The total amount is 1,234.56 dollars.",
    "USER: describe the chart. ASSISTANT: The chart shows sales by year: 2019, 2020, 2021.",
    "Invoice number: 0042, date: 2026-11-24, due: net 30 days.",
    "the quick brown fox jumps over the lazy dog\nTHE QUICK BROWN FOX\n",
]
SPECIAL = ["<unk>", "<s>", "</s>", "<pad>", "<image>"]
VISION = dict(hidden_size=32, intermediate_size=64, num_hidden_layers=6, num_attention_heads=4,
              image_size=336, patch_size=42, projection_dim=32)  # 336 / 42 = 8 → 64 tokens a view
TEXT = dict(hidden_size=64, intermediate_size=128, num_hidden_layers=2, num_attention_heads=4,
            num_key_value_heads=4, max_position_embeddings=4096, rms_norm_eps=1e-5,
            initializer_range=0.3)  # wide init: decisive logits, so greedy answers never hinge on rounding
IMAGE_MEAN = [0.5, 0.4, 0.3]  # not CLIP's: tests see that docread reads the checkpoint's own
IMAGE_STD = [0.2, 0.25, 0.3]


def build_tokenizer(corpus: list[str] | None = None, vocab_size: int = 400):
    """A byte-level BPE tokenizer in the llava-hf shape: <s> prepended, `<image>` special."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, processors, trainers
    from transformers import PreTrainedTokenizerFast

    tok = Tokenizer(models.BPE(unk_token="<unk>"))
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=vocab_size, special_tokens=SPECIAL,
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet())
    tok.train_from_iterator(corpus or CORPUS, trainer)
    bos = tok.token_to_id("<s>")
    tok.post_processor = processors.TemplateProcessing(single="<s> $A", pair="<s> $A <s> $B",
                                                       special_tokens=[("<s>", bos)])
    fast = PreTrainedTokenizerFast(tokenizer_object=tok, bos_token="<s>", eos_token="</s>", unk_token="<unk>",
                                   pad_token="<pad>", additional_special_tokens=["<image>"])
    return fast


def build_tiny_llava(path: Path, kind: str = "llava", seed: int = 0, *, vision: dict | None = None,
                     text: dict | None = None, tokenizer=None) -> Path:
    """Save a random llava ("llava") or llava_next ("llava_next") checkpoint with its processor files."""
    import transformers as tf

    path = Path(path)
    tokenizer = tokenizer or build_tokenizer()
    vision, text_shape = {**VISION, **(vision or {})}, {**TEXT, **(text or {})}
    side = vision["image_size"]
    ids = {name: tokenizer.convert_tokens_to_ids(name) for name in SPECIAL}
    text = tf.LlamaConfig(vocab_size=len(tokenizer), bos_token_id=ids["<s>"], eos_token_id=ids["</s>"],
                          pad_token_id=ids["<pad>"], **text_shape)
    common = dict(vision_config=tf.CLIPVisionConfig(**vision), text_config=text, image_token_index=ids["<image>"],
                  vision_feature_layer=-2, vision_feature_select_strategy="default", projector_hidden_act="gelu")
    if kind == "llava":
        config, cls = tf.LlavaConfig(**common), tf.LlavaForConditionalGeneration
    elif kind == "llava_next":
        pinpoints = [[side, 2 * side], [2 * side, side], [2 * side, 2 * side], [3 * side, side], [side, 3 * side]]
        config, cls = tf.LlavaNextConfig(image_grid_pinpoints=pinpoints, **common), tf.LlavaNextForConditionalGeneration
    else:
        raise ValueError(f"kind {kind!r}: llava or llava_next")
    torch.manual_seed(seed)
    model = cls(config).eval()
    model.save_pretrained(path)
    image_processor = tf.CLIPImageProcessorPil(size={"shortest_edge": side}, crop_size={"height": side, "width": side},
                                               image_mean=IMAGE_MEAN, image_std=IMAGE_STD)
    if kind == "llava":
        processor = tf.LlavaProcessor(image_processor=image_processor, tokenizer=tokenizer, patch_size=vision["patch_size"],
                                      vision_feature_select_strategy="default", image_token="<image>",
                                      num_additional_image_tokens=1)
        processor.save_pretrained(path)
    else:
        tokenizer.save_pretrained(path)
        image_processor.save_pretrained(path)
    return path
