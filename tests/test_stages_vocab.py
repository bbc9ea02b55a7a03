"""Vocabulary extension in stage pt: learned tokens added, mean-initialised embeddings, merged model loads."""

from __future__ import annotations

import json
import random
from pathlib import Path

import pytest
import torch
from transformers import AutoModelForCausalLM, AutoTokenizer

from tests.test_sft import make_cfg
from tests.tiny import build_model, build_tokenizer
from tuneforge.config import ConfigError, load
from tuneforge.methods import METHOD_PARAMS
from tuneforge.models.vocab import init_new_embeddings, learn_tokens
from tuneforge.stages import STAGES, run_stage

WORDS = ["photosynthesis", "chlorophyll", "mitochondria", "ribosome", "cytoplasm", "membrane", "enzyme", "glucose"]


def corpus(path: Path, n: int = 60) -> Path:
    rng = random.Random(0)
    path.write_text("\n".join(" ".join(rng.choices(WORDS, k=8)) + "." for _ in range(n)) + "\n", encoding="utf-8")
    return path


def test_new_rows_are_the_mean_of_their_sub_tokens() -> None:
    base, tok = build_tokenizer(), build_tokenizer()
    model = build_model(tok, tie=False)
    added = learn_tokens(base, ["chlorophyll glucose"] * 5, 4)
    assert "chlorophyll" in added
    tok.add_tokens(added)
    init_new_embeddings(model, base, added, tok)
    parts = base("chlorophyll", add_special_tokens=False)["input_ids"]
    new = tok.convert_tokens_to_ids("chlorophyll")
    for table in (model.get_input_embeddings().weight, model.get_output_embeddings().weight):
        assert torch.allclose(table[new], table[parts].mean(0))


def test_learned_tokens_save_the_most_tokens_first_characters_included() -> None:
    base = build_tokenizer()  # byte-level, trained on English: a CJK character is 3 byte tokens
    texts = ["春风春风春风 明月明月 夜"] * 4 + ["[UNK] [UNK] 花"]
    added = learn_tokens(base, texts, 20, min_frequency=2)
    assert "[UNK]" not in added  # the BPE model's own unknown token is never a candidate
    assert "夜" in added and "花" not in added  # a single character the base splits; 花 occurs once
    saving = {
        p: sum(t.count(p) for t in texts) * (len(base(p, add_special_tokens=False)["input_ids"]) - 1) for p in added
    }
    assert list(saving.values()) == sorted(saving.values(), reverse=True)  # the largest saving first
    assert added[0] in ("春风", "春风春风", "春风春风春风")


def test_pt_with_vocab_extension(tmp_path: Path, tiny_llama3_dir: Path) -> None:
    text = corpus(tmp_path / "domain.txt")
    data = {"datasets": [{"path": str(text)}], "cutoff_len": 32, "val_size": 0.2}
    raw = make_cfg(tmp_path, tiny_llama3_dir, stage="pt", data=data, vocab={"corpus": str(text), "new_tokens": 16})
    result = run_stage(load(raw, methods=METHOD_PARAMS))
    run = result.run_dir
    vocab = json.loads((run / "vocab.json").read_text())
    assert vocab["added"] and vocab["tokens_per_char_after"] < vocab["tokens_per_char_before"]
    merged = run / "merged"
    tok = AutoTokenizer.from_pretrained(merged)
    model = AutoModelForCausalLM.from_pretrained(merged)
    assert len(tok) == model.get_input_embeddings().weight.shape[0] > len(build_tokenizer("llama3"))
    ids = tok.apply_chat_template(
        [{"role": "user", "content": "chlorophyll"}], add_generation_prompt=True, return_tensors="pt", return_dict=True
    )
    out = model.generate(**ids, max_new_tokens=3, do_sample=False)  # the extended model still chats
    assert out.shape[1] == ids["input_ids"].shape[1] + 3


def test_vocab_section_only_with_pt(tmp_path: Path, tiny_model_dir: Path) -> None:
    raw = make_cfg(tmp_path, tiny_model_dir, vocab={"corpus": str(corpus(tmp_path / "c.txt"))})
    with pytest.raises(ConfigError, match="section `vocab` applies to stage 'pt'"):
        load(raw, methods=METHOD_PARAMS, stages=STAGES)
