"""Tiny random Llama-style models and tokenizers, built from config (no downloads).

Two chat templates are provided so rendering and masking are checked on more than one layout:
ChatML (SmolLM2 / Qwen style) and Llama-3 style headers. Two more render tools and tool calls themselves:
`qwen25` (Qwen2.5's <tools> / <tool_call> layout) and `llama31` (Llama-3.1's JSON calls, one per turn).
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

# Qwen2.5 style: the tools and their instructions in the system turn, calls as <tool_call> blocks written from
# `tool_calls`, tool results as <tool_response> blocks in a user turn (consecutive results share one turn).
QWEN25_TEMPLATE = (
    "{%- if tools %}{{ '<|im_start|>system\\n' }}"
    "{%- if messages[0].role == 'system' %}{{ messages[0].content + '\\n\\n' }}{%- endif %}"
    "{{ '# Tools\\n\\nYou may call one or more functions to assist with the user query.\\n\\n"
    "You are provided with function signatures within <tools></tools> XML tags:\\n<tools>' }}"
    "{%- for tool in tools %}{{ '\\n' }}{{ tool | tojson }}{%- endfor %}"
    "{{ '\\n</tools>\\n\\nFor each function call, return a json object with function name and arguments within "
    '<tool_call></tool_call> XML tags:\\n<tool_call>\\n{"name": <function-name>, "arguments": '
    "<args-json-object>}\\n</tool_call><|im_end|>\\n' }}"
    "{%- elif messages[0].role == 'system' %}{{ '<|im_start|>system\\n' + messages[0].content + '<|im_end|>\\n' }}"
    "{%- else %}{{ '<|im_start|>system\\nYou are a tiny test model.<|im_end|>\\n' }}{%- endif %}"
    "{%- for message in messages %}"
    "{%- if message.role == 'user' or (message.role == 'assistant' and not message.tool_calls) %}"
    "{{ '<|im_start|>' + message.role + '\\n' + message.content + '<|im_end|>\\n' }}"
    "{%- elif message.role == 'assistant' %}{{ '<|im_start|>assistant' }}"
    "{%- if message.content %}{{ '\\n' + message.content }}{%- endif %}"
    "{%- for tc in message.tool_calls %}{%- if tc.function is defined %}{%- set tc = tc.function %}{%- endif %}"
    '{{ \'\\n<tool_call>\\n{"name": "\' + tc.name + \'", "arguments": \' + (tc.arguments | tojson) + \'}\\n'
    "</tool_call>' }}{%- endfor %}{{ '<|im_end|>\\n' }}"
    "{%- elif message.role == 'tool' %}"
    "{%- if loop.index0 == 0 or messages[loop.index0 - 1].role != 'tool' %}{{ '<|im_start|>user' }}{%- endif %}"
    "{{ '\\n<tool_response>\\n' + message.content + '\\n</tool_response>' }}"
    "{%- if loop.last or messages[loop.index0 + 1].role != 'tool' %}{{ '<|im_end|>\\n' }}{%- endif %}"
    "{%- endif %}{%- endfor %}"
    "{%- if add_generation_prompt %}{{ '<|im_start|>assistant\\n' }}{%- endif %}"
)

# Llama-3.1 style: tools in the first user turn, one call per turn as {"name", "parameters"} JSON (several in one
# turn raise, as Meta's template does), tool results in an `ipython` turn.
LLAMA31_TEMPLATE = (
    "{{- bos_token }}"
    "{%- if messages[0].role == 'system' %}{%- set system = messages[0].content %}{%- set rest = messages[1:] %}"
    "{%- else %}{%- set system = '' %}{%- set rest = messages %}{%- endif %}"
    "{{- '<|start_header_id|>system<|end_header_id|>\\n\\n' + system + '<|eot_id|>' }}"
    "{%- for message in rest %}"
    "{%- if tools and loop.first and message.role == 'user' %}"
    "{{- '<|start_header_id|>user<|end_header_id|>\\n\\nGiven the following functions, please respond with a JSON "
    "for a function call with its proper arguments that best answers the given prompt.\\n\\nRespond in the format "
    '{"name": function name, "parameters": dictionary of argument name and its value}.\\n\\n\' }}'
    "{%- for t in tools %}{{- t | tojson }}{{- '\\n\\n' }}{%- endfor %}"
    "{{- message.content + '<|eot_id|>' }}"
    "{%- elif message.role == 'assistant' and message.tool_calls %}"
    "{%- if message.tool_calls | length != 1 %}{{ raise_exception('This model only supports single tool-calls at "
    "once!') }}{%- endif %}"
    "{%- set tc = message.tool_calls[0].function %}"
    '{{- \'<|start_header_id|>assistant<|end_header_id|>\\n\\n{"name": "\' + tc.name + \'", "parameters": \''
    " + (tc.arguments | tojson) + '}<|eot_id|>' }}"
    "{%- elif message.role == 'tool' %}"
    "{{- '<|start_header_id|>ipython<|end_header_id|>\\n\\n' + message.content + '<|eot_id|>' }}"
    "{%- else %}"
    "{{- '<|start_header_id|>' + message.role + '<|end_header_id|>\\n\\n' + message.content | trim + '<|eot_id|>' }}"
    "{%- endif %}{%- endfor %}"
    "{%- if add_generation_prompt %}{{- '<|start_header_id|>assistant<|end_header_id|>\\n\\n' }}{%- endif %}"
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


_CHATML_TOKENS = ("<|im_start|>", "<|im_end|>", "<|im_end|>")  # bos, eos, pad
_LLAMA3_TOKENS = ("<|begin_of_text|>", "<|eot_id|>", "<pad>")
# template name -> (bos, eos, pad), chat template: ChatML (SmolLM2 / Qwen), Llama-3, and their tool layouts
TEMPLATES = {
    "chatml": (_CHATML_TOKENS, CHATML_TEMPLATE),
    "llama3": (_LLAMA3_TOKENS, LLAMA3_TEMPLATE),
    "qwen25": (_CHATML_TOKENS, QWEN25_TEMPLATE),  # ChatML tokens, Qwen2.5's tool layout
    "llama31": (_LLAMA3_TOKENS, LLAMA31_TEMPLATE),  # Llama-3 tokens, Llama-3.1's tool layout
}


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
    if template not in TEMPLATES:
        raise ValueError(f"unknown template {template!r}; known: {', '.join(TEMPLATES)}")
    (bos, eos, pad), chat_template = TEMPLATES[template]
    fast = PreTrainedTokenizerFast(
        tokenizer_object=tok, bos_token=bos, eos_token=eos, pad_token=pad, unk_token="<|endoftext|>"
    )
    fast.chat_template = chat_template
    return fast


def build_model(
    tokenizer: PreTrainedTokenizerFast, seed: int = 0, tie: bool = True, hidden: int = 32
) -> LlamaForCausalLM:
    """A 2-layer Llama; `hidden=64` where bitsandbytes needs its blocks of 64 weights."""
    torch.manual_seed(seed)
    cfg = LlamaConfig(
        vocab_size=len(tokenizer),
        hidden_size=hidden,
        intermediate_size=2 * hidden,
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
