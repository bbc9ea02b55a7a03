"""Ollama Modelfiles (chat template in Go-template form) and the LoRA-only GGUF adapter export."""

from __future__ import annotations

import re
import shutil
from pathlib import Path

import pytest
from safetensors.torch import load_file, save_file

from tests.test_export import train
from tests.tiny import build_tokenizer
from tuneforge.export import gguf_lora, llamacpp
from tuneforge.export.modelfile import TemplateError, chat_pieces, modelfile_text
from tuneforge.export.run import export_run, format_table

BRANCH = re.compile(r'\{\{ (?:else )?if eq \.Role "(\w+)" \}\}(.*?)\{\{ \.Content \}\}(.*?)(?=\{\{ (?:else|end))', re.S)
GENERATION = re.compile(r'\{\{ if and \$last \(ne \.Role "assistant"\) \}\}(.*?)\{\{ end \}\}\{\{ end \}\}$', re.S)


def run_go_template(template: str, messages: list[dict[str, str]]) -> str:
    """Evaluate the TEMPLATE tuneforge writes (its fixed structure: a role switch in a range over .Messages)."""
    wrap = {role: (before, after) for role, before, after in BRANCH.findall(template)}
    generation = GENERATION.search(template)
    assert set(wrap) == {"system", "user", "assistant"} and generation is not None, template
    text = "".join(wrap[m["role"]][0] + m["content"] + wrap[m["role"]][1] for m in messages)
    return text + (generation.group(1) if messages[-1]["role"] != "assistant" else "")


def modelfile_parts(text: str) -> dict[str, list[str]]:
    parts: dict[str, list[str]] = {}
    for m in re.finditer(r'^(FROM|ADAPTER|TEMPLATE|SYSTEM|PARAMETER) ("""(.*?)"""|[^\n]*)$', text, re.S | re.M):
        parts.setdefault(m.group(1), []).append(m.group(3) if m.group(3) is not None else m.group(2))
    return parts


CHATS = [
    [{"role": "user", "content": "What is 2+2?"}],
    [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "hi"}],
    [
        {"role": "user", "content": "hi"},
        {"role": "assistant", "content": "Hello!"},
        {"role": "user", "content": "Write 3 March 2021 as ISO."},
    ],
]


@pytest.mark.parametrize("template", ["chatml", "llama3"])
def test_modelfile_template_renders_like_the_chat_template(template: str) -> None:
    tok = build_tokenizer(template)
    text, problem = modelfile_text(tok, "./model-f16.gguf")
    assert problem is None
    parts = modelfile_parts(text)
    assert parts["FROM"] == ["./model-f16.gguf"] and "ADAPTER" not in parts
    default_system = parts.get("SYSTEM", [None])[0]
    for chat in CHATS:
        expected = tok.apply_chat_template(chat, tokenize=False, add_generation_prompt=True)
        if template == "llama3":
            expected = expected.removeprefix(tok.bos_token)  # llama.cpp adds BOS itself
        messages = chat
        if chat[0]["role"] != "system" and default_system is not None:
            messages = [{"role": "system", "content": default_system}, *chat]  # what Ollama does with SYSTEM
        assert run_go_template(parts["TEMPLATE"][0], messages) == expected
    stops = {p.removeprefix("stop ").strip('"') for p in parts["PARAMETER"]}
    assert ("<|im_end|>" if template == "chatml" else "<|eot_id|>") in stops


def test_chatml_default_system_prompt_and_llama3_bos() -> None:
    chatml = chat_pieces(build_tokenizer("chatml"))
    assert chatml.default_system == "You are a tiny test model."
    assert chatml.prefix["user"] == "<|im_start|>user\n" and chatml.suffix["user"] == "<|im_end|>\n"
    assert chatml.generation_prompt == "<|im_start|>assistant\n"
    llama3 = chat_pieces(build_tokenizer("llama3"))
    assert llama3.default_system is None
    assert llama3.prefix["system"] == "<|start_header_id|>system<|end_header_id|>\n\n"  # no <|begin_of_text|>


def test_untranslatable_template_falls_back_to_the_gguf_template() -> None:
    tok = build_tokenizer("chatml")
    tok.chat_template = (
        "{% for m in messages %}<|im_start|>{{ m['role'] }}\n{{ m['content'] | upper }}<|im_end|>\n{% endfor %}"
        "{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}"
    )
    with pytest.raises(TemplateError, match="does not copy"):
        chat_pieces(tok)
    text, problem = modelfile_text(tok, "./m.gguf", adapter="./a.gguf")
    assert problem and "TEMPLATE" not in modelfile_parts(text)
    assert "# no TEMPLATE:" in text and "ADAPTER ./a.gguf" in text and 'PARAMETER stop "<|im_end|>"' in text


def test_gguf_lora_without_converter_says_how_to_fetch_it(tmp_path: Path, monkeypatch) -> None:
    monkeypatch.setenv("TUNEFORGE_LLAMA_CPP", str(tmp_path))
    with pytest.raises(gguf_lora.LoraGgufError, match=r"python -m tuneforge\.export\.gguf_lora --fetch"):
        export_run(tmp_path / "no-run", fmt="gguf-lora")


def test_gguf_lora_refuses_adapters_that_are_not_plain_lora(tmp_path: Path, tiny_model_dir: Path) -> None:
    dora = train(tmp_path, tiny_model_dir, {"name": "dora", "r": 4}, name="d")
    with pytest.raises(gguf_lora.LoraGgufError, match="DoRA"):
        gguf_lora.check_lora_adapter(dora / "adapter")
    ia3 = train(tmp_path, tiny_model_dir, {"name": "ia3"}, name="i")
    with pytest.raises(gguf_lora.LoraGgufError, match="IA3"):
        gguf_lora.check_lora_adapter(ia3 / "adapter")


@pytest.fixture
def converter() -> Path:
    try:
        return gguf_lora.converter_script()
    except gguf_lora.LoraGgufError as e:
        pytest.skip(f"llama.cpp's LoRA converter is not fetched ({e}); .ci/run fetches it")


def test_gguf_lora_export_holds_every_adapted_module(tmp_path: Path, tiny_model_dir: Path, converter: Path) -> None:
    run = train(tmp_path, tiny_model_dir, {"name": "lora", "r": 4, "alpha": 8}, name="l")
    result = export_run(run, fmt="gguf-lora")
    out = format_table(result)
    result_dir = run / "gguf-lora"
    adapter = load_file(str(run / "adapter" / "adapter_model.safetensors"))
    modules = {k.removeprefix("base_model.model.").removesuffix(".lora_A.weight") for k in adapter if ".lora_A." in k}
    assert len(modules) == 14  # 7 linear layers x 2 blocks (target_modules all-linear)
    for module in modules:
        assert f"| {module} |" in out
    assert result.gguf == result_dir / "adapter-f16.gguf" and result.modelfile == result_dir / "Modelfile"
    assert "adapter-f16.gguf" in (result_dir / "verify.md").read_text(encoding="utf-8")
    # llama.cpp cannot run the tiny model (its converter does not know the test tokenizer): said, not fatal
    assert result.llama_note.startswith("not run in llama.cpp") and not result.llama_rows
    assert ("no f16 GGUF of the base" if llamacpp.available() else "not installed") in result.llama_note
    parts = modelfile_parts((result_dir / "Modelfile").read_text(encoding="utf-8"))
    assert parts["ADAPTER"] == ["./adapter-f16.gguf"] and parts["FROM"] == [str(tiny_model_dir)]
    assert parts["SYSTEM"] == ["You are a tiny test model."]
    with pytest.raises(FileExistsError, match="already exists"):  # never replaced without --overwrite
        export_run(run, fmt="gguf-lora")

    # the check compares values: an adapter whose weights differ is caught
    other = tmp_path / "other"
    shutil.copytree(run / "adapter", other)
    save_file({k: v * 2 for k, v in adapter.items()}, str(other / "adapter_model.safetensors"))
    rows = gguf_lora.verify(
        result_dir / "adapter-f16.gguf",
        other,
        {"num_hidden_layers": 2, "num_attention_heads": 4, "num_key_value_heads": 2},
        8.0,
    )
    assert max(r["max_abs_diff_a"] for r in rows) > gguf_lora.TOLERANCE["f16"]
