"""Tokenizer and model loading from local folders (tiny models; the embedded one is stubbed out)."""

from __future__ import annotations

import shutil
from pathlib import Path
from typing import Any

import pytest
import torch

from tests.tiny import build_tokenizer
from tuneforge.config import ModelConfig
from tuneforge.models import ModelError, loader
from tuneforge.models.loader import load_model, load_tokenizer, read_chat_template, resolve_model_path

MESSAGES = [{"role": "user", "content": "hello"}]


def test_missing_path_explains_no_downloads(tmp_path: Path) -> None:
    missing = tmp_path / "HuggingFaceTB" / "SmolLM2-360M"
    with pytest.raises(ModelError) as err:
        resolve_model_path(ModelConfig(path=str(missing)))
    text = str(err.value)
    assert str(missing) in text and "does not download" in text and "model.path=embedded" in text
    assert isinstance(err.value, ValueError)


def test_folder_without_config_json(tmp_path: Path) -> None:
    (tmp_path / "model.gguf").write_bytes(b"GGUF")
    with pytest.raises(ModelError, match=r"no config\.json.*GGUF"):
        resolve_model_path(ModelConfig(path=str(tmp_path)))
    with pytest.raises(ModelError, match="is a file"):
        resolve_model_path(ModelConfig(path=str(tmp_path / "model.gguf")))


def test_folder_without_safetensors_is_refused(tiny_model_dir: Path, tmp_path: Path) -> None:
    shutil.copy(tiny_model_dir / "config.json", tmp_path / "config.json")
    (tmp_path / "pytorch_model.bin").write_bytes(b"pickle")
    with pytest.raises(ModelError, match=r"no \.safetensors"):
        load_model(ModelConfig(path=str(tmp_path)))


def test_embedded_aliases_resolve_to_the_cached_checkpoint(
    monkeypatch: pytest.MonkeyPatch, tiny_model_dir: Path
) -> None:
    monkeypatch.setattr(loader, "embedded_model_dir", lambda: tiny_model_dir)
    for alias in ("embedded", "SmolLM2-135M-Instruct", " smollm2-135m-instruct "):
        assert resolve_model_path(ModelConfig(path=alias)) == tiny_model_dir
    tok = load_tokenizer(ModelConfig(path="embedded"))
    assert "<|im_start|>" in tok.chat_template


def test_tokenizer_defaults(tiny_model_dir: Path) -> None:
    tok = load_tokenizer(ModelConfig(path=str(tiny_model_dir)))
    assert tok.padding_side == "right"
    assert tok.pad_token == "<|im_end|>"  # the folder's own pad token is kept
    assert tok.apply_chat_template(MESSAGES, tokenize=False).startswith("<|im_start|>system")


def test_chat_template_override_inline_and_file(tiny_model_dir: Path, tmp_path: Path) -> None:
    inline = "{% for m in messages %}[{{ m['role'] }}] {{ m['content'] }}\n{% endfor %}"
    tok = load_tokenizer(ModelConfig(path=str(tiny_model_dir), chat_template=inline))
    assert tok.apply_chat_template(MESSAGES, tokenize=False) == "[user] hello\n"
    path = tmp_path / "plain.jinja"
    path.write_text("{% for m in messages %}<{{ m['content'] }}>{% endfor %}", encoding="utf-8")
    tok = load_tokenizer(ModelConfig(path=str(tiny_model_dir), chat_template=str(path)))
    assert tok.apply_chat_template(MESSAGES, tokenize=False) == "<hello>"
    with pytest.raises(ModelError, match=r"neither a Jinja template.*nor an existing file"):
        read_chat_template(str(tmp_path / "missing.jinja"))


def _tokenizer_dir(tmp_path: Path, drop: tuple[str, ...]) -> Path:
    tok = build_tokenizer("llama3")
    for attr in drop:
        setattr(tok, attr, None)
    tok.save_pretrained(tmp_path / "tok")
    return tmp_path / "tok"


def test_pad_token_falls_back_to_eos(tiny_llama3_dir: Path, tmp_path: Path) -> None:
    folder = _tokenizer_dir(tmp_path, ("pad_token",))
    tok = load_tokenizer(ModelConfig(path=str(tiny_llama3_dir), tokenizer=str(folder)))
    assert tok.pad_token == tok.eos_token == "<|eot_id|>"


def test_missing_pad_and_eos_adds_a_pad_and_grows_the_embedding(tiny_llama3_dir: Path, tmp_path: Path):
    folder = _tokenizer_dir(tmp_path, ("pad_token", "eos_token"))
    cfg = ModelConfig(path=str(tiny_llama3_dir), tokenizer=str(folder))
    tok = load_tokenizer(cfg)
    assert tok.pad_token == loader.FALLBACK_PAD
    model = load_model(cfg, tok)
    assert model.get_input_embeddings().weight.shape[0] == len(tok)
    assert model.get_output_embeddings().weight.shape[0] == len(tok)


def test_missing_tokenizer_folder_names_the_key(tiny_model_dir: Path, tmp_path: Path) -> None:
    with pytest.raises(ModelError, match=r"model\.tokenizer="):
        load_tokenizer(ModelConfig(path=str(tiny_model_dir), tokenizer=str(tmp_path / "nope")))


def test_model_dtype_and_pad_id(tiny_model_dir: Path) -> None:
    cfg = ModelConfig(path=str(tiny_model_dir), dtype="bfloat16")
    tok = load_tokenizer(cfg)
    model = load_model(cfg, tok)
    assert model.dtype == torch.bfloat16
    assert model.config.pad_token_id == tok.pad_token_id


def test_load_model_is_safe_by_default(monkeypatch: pytest.MonkeyPatch, tiny_model_dir: Path) -> None:
    from transformers import AutoModelForCausalLM

    seen: dict[str, Any] = {}
    real = AutoModelForCausalLM.from_pretrained

    def spy(*args: Any, **kwargs: Any) -> Any:
        seen.update(kwargs)
        return real(*args, **kwargs)

    monkeypatch.setattr(AutoModelForCausalLM, "from_pretrained", spy)
    load_model(ModelConfig(path=str(tiny_model_dir)))
    assert seen["use_safetensors"] is True and seen["trust_remote_code"] is False
    assert seen["dtype"] == torch.float32


def test_load_kwargs_reach_from_pretrained_but_not_owned_settings(tiny_model_dir: Path) -> None:
    cfg = ModelConfig(path=str(tiny_model_dir))
    with pytest.raises(ModelError, match=r"dtype come from the model config section"):
        load_model(cfg, dtype=torch.bfloat16)
    model = load_model(cfg, attn_implementation="eager")
    assert model.config._attn_implementation == "eager"
