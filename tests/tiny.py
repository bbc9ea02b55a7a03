"""Tiny random Llama-style models and tokenizers, built from config (no downloads).

Two chat templates are provided so rendering and masking are checked on more than one layout:
ChatML (SmolLM2 / Qwen style) and Llama-3 style headers.
"""

from __future__ import annotations

from pathlib import Path

import torch
from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
from transformers import LlamaConfig, LlamaForCausalLM, PreTrainedTokenizerFast

CHATML_TEMPLATE = (
    "{% for message in messages %}"
    "{% if loop.first and messages[0]['role'] != 'system' %}"
    "{{ '<|im_start|>system\\nYou are a tiny test model.<|im_end|>\\n' }}{% endif %}"
    "{{ '<|im_start|>' + message['role'] + '\\n' + message['content'] + '<|im_end|>' + '\\n' }}"
    "{% endfor %}"
    "{% if add_generation_prompt %}{{ '<|im_start|>assistant\\n' }}{% endif %}"
)

LLAMA3_TEMPLATE = (
    "{{ bos_token }}"
    "{% for message in messages %}"
    "{{ '<|start_header_id|>' + message['role'] + '<|end_header_id|>\\n\\n' + message['content'] | trim"
    " + '<|eot_id|>' }}"
    "{% endfor %}"
    "{% if add_generation_prompt %}{{ '<|start_header_id|>assistant<|end_header_id|>\\n\\n' }}{% endif %}"
)

SPECIALS = [
    "<|endoftext|>",
    "<|im_start|>",
    "<|im_end|>",
    "<|begin_of_text|>",
    "<|start_header_id|>",
    "<|end_header_id|>",
    "<|eot_id|>",
    "<pad>",
]

_CORPUS = [
    "You are a helpful assistant. Who are you? I am an assistant made by the team.",
    "system user assistant tool observation function call name arguments content",
    "What is the capital of France? The capital of France is Paris.",
    "Translate to French: hello world. Bonjour le monde.",
    "Convert to ISO date: 14 March 2021 -> 2021-03-14. January February April May June July",
    "August September October November December 0 1 2 3 4 5 6 7 8 9 10 11 12 + - * / = ? ! . ,",
    "The quick brown fox jumps over the lazy dog. def add(a, b): return a + b",
    "instruction input output question answer positive negative yes no",
]


def build_tokenizer(template: str = "chatml") -> PreTrainedTokenizerFast:
    tok = Tokenizer(models.BPE(unk_token=None, byte_fallback=False))
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=400,
        special_tokens=SPECIALS,
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    tok.train_from_iterator(_CORPUS * 4, trainer=trainer)
    if template == "chatml":
        fast = PreTrainedTokenizerFast(
            tokenizer_object=tok,
            bos_token="<|im_start|>",
            eos_token="<|im_end|>",
            pad_token="<|im_end|>",
            unk_token="<|endoftext|>",
        )
        fast.chat_template = CHATML_TEMPLATE
    elif template == "llama3":
        fast = PreTrainedTokenizerFast(
            tokenizer_object=tok,
            bos_token="<|begin_of_text|>",
            eos_token="<|eot_id|>",
            pad_token="<pad>",
            unk_token="<|endoftext|>",
        )
        fast.chat_template = LLAMA3_TEMPLATE
    else:
        raise ValueError(f"unknown template {template!r}")
    return fast


def build_model(tokenizer: PreTrainedTokenizerFast, seed: int = 0, tie: bool = True) -> LlamaForCausalLM:
    torch.manual_seed(seed)
    cfg = LlamaConfig(
        vocab_size=len(tokenizer),
        hidden_size=32,
        intermediate_size=64,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=2,
        max_position_embeddings=512,
        tie_word_embeddings=tie,
        bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id,
    )
    return LlamaForCausalLM(cfg)


def save_tiny(path: Path, template: str = "chatml", tie: bool = True) -> Path:
    tok = build_tokenizer(template)
    model = build_model(tok, tie=tie)
    model.save_pretrained(path)
    tok.save_pretrained(path)
    return path
