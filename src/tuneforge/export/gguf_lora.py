"""A LoRA adapter as a GGUF file (llama.cpp `--lora`, Ollama `ADAPTER`), converted by llama.cpp's own script.

`convert_lora_to_gguf.py` ships in the llama-cpp-python source distribution on PyPI (vendor/llama.cpp) together
with the `conversion/` package and the `gguf-py` it imports; it is used from there, never copied into tuneforge.
`python -m tuneforge.export.gguf_lora --fetch` downloads that sdist with pip and unpacks just those files into the cache
(or point TUNEFORGE_LLAMA_CPP at any llama.cpp checkout). The script runs in a subprocess: it puts its own gguf-py
first on sys.path, which must not shadow the `gguf` tuneforge imports.

The file is verified by reading it back with gguf's GGUFReader: every adapted module of the PEFT adapter must be
there as lora_a / lora_b with the adapter's shapes and values (llama.cpp permutes the rows of Llama q/k
projections for its rotary layout; the check undoes that), and adapter.lora.alpha must be the adapter's alpha.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tarfile
import tempfile
from pathlib import Path
from typing import Any

import numpy as np

from tuneforge.errors import TuneforgeError
from tuneforge.models.embedded import cache_root

LLAMA_CPP_PYTHON = "llama-cpp-python==0.3.36"  # the sdist whose vendor/llama.cpp scripts were tested
SCRIPT = "convert_lora_to_gguf.py"
NEEDED = (SCRIPT, "convert_hf_to_gguf.py", "conversion/", "gguf-py/")
# PEFT adapter types llama.cpp's converter reads: plain LoRA only (DoRA magnitudes, LoHa/LoKr, IA3 are not LoRA).
TOLERANCE = {"f16": 2e-3, "q8_0": 2e-2}


class LoraGgufError(TuneforgeError, ValueError):
    pass


def default_dir() -> Path:
    return cache_root() / "llama.cpp"


def converter_script() -> Path:
    folder = Path(os.environ.get("TUNEFORGE_LLAMA_CPP") or default_dir()).expanduser()
    script = folder / SCRIPT
    if not script.is_file():
        raise LoraGgufError(
            f"--format gguf-lora needs llama.cpp's {SCRIPT} (not found in {folder}); fetch it from the "
            f"llama-cpp-python sdist on PyPI with: python -m tuneforge.export.gguf_lora --fetch "
            "(or set TUNEFORGE_LLAMA_CPP to a llama.cpp checkout)"
        )
    return script


def hf_converter_script() -> Path | None:
    """llama.cpp's convert_hf_to_gguf.py beside the LoRA converter (fetched together), if it is there."""
    folder = Path(os.environ.get("TUNEFORGE_LLAMA_CPP") or default_dir()).expanduser()
    script = folder / "convert_hf_to_gguf.py"
    return script if script.is_file() else None


def fetch(dest: Path | None = None, spec: str = LLAMA_CPP_PYTHON) -> Path:
    """pip-download the llama-cpp-python sdist and unpack only the converter and what it imports into `dest`."""
    dest = dest or default_dir()
    with tempfile.TemporaryDirectory() as tmp:
        cmd = [sys.executable, "-m", "pip", "download", "-q", "--no-deps", "--no-binary", ":all:", "-d", tmp, spec]
        done = subprocess.run(cmd, capture_output=True, text=True, check=False)
        found = list(Path(tmp).glob("llama_cpp_python-*.tar.gz"))
        if not found:
            raise LoraGgufError(f"pip download of {spec} failed: {done.stderr[-2000:]}")
        with tarfile.open(found[0]) as tar:
            for member in tar.getmembers():
                parts = member.name.split("/", 3)  # llama_cpp_python-X/vendor/llama.cpp/<path>
                if len(parts) < 4 or parts[1:3] != ["vendor", "llama.cpp"] or not member.isfile():
                    continue
                if any(parts[3] == n or (n.endswith("/") and parts[3].startswith(n)) for n in NEEDED):
                    member.name = parts[3]
                    tar.extract(member, dest, filter="data")
    return dest / SCRIPT


def check_lora_adapter(adapter: Path) -> dict[str, Any]:
    config_path = adapter / "adapter_config.json"
    if not config_path.is_file() or not (adapter / "adapter_model.safetensors").is_file():
        raise LoraGgufError(f"{adapter} is not a PEFT adapter folder (adapter_config.json + adapter_model.safetensors)")
    config = json.loads(config_path.read_text(encoding="utf-8"))
    if config.get("peft_type") != "LORA" or config.get("use_dora"):
        kind = "DoRA" if config.get("use_dora") else config.get("peft_type")
        raise LoraGgufError(f"a GGUF adapter holds plain LoRA weights; this run's adapter is {kind}")
    init = config.get("init_lora_weights", True)
    if isinstance(init, str) and init.lower().startswith(("pissa", "olora", "corda", "eva")):
        raise LoraGgufError(
            f"init_lora_weights={init} changes the base weights as well: the adapter alone does not fit the original "
            "base; export the merged model instead (--format gguf)"
        )
    if config.get("modules_to_save"):
        raise LoraGgufError(
            f"modules_to_save={config['modules_to_save']} are whole modules, not LoRA: use --format gguf"
        )
    return dict(config)


def convert(script: Path, adapter: Path, base_dir: Path, out: Path, gguf_type: str) -> Path:
    cmd = [sys.executable, str(script), str(adapter), "--base", str(base_dir), "--outfile", str(out)]
    cmd += ["--outtype", gguf_type]
    done = subprocess.run(cmd, capture_output=True, text=True, check=False)
    if done.returncode != 0 or not out.is_file():
        sys.stderr.write(done.stderr[-4000:])
        raise LoraGgufError(f"llama.cpp's LoRA converter failed (exit {done.returncode}): {' '.join(cmd)}")
    return out


def _llama_permute(w: np.ndarray, n_head: int) -> np.ndarray:
    """llama.cpp's row order for Llama q/k projections (convert_hf_to_gguf.LlamaModel.permute)."""
    return w.reshape(n_head, 2, w.shape[0] // n_head // 2, *w.shape[1:]).swapaxes(1, 2).reshape(w.shape)


def verify(gguf_file: Path, adapter: Path, base_config: dict[str, Any], alpha: float) -> list[dict[str, Any]]:
    """One row per adapted module: GGUF name, shapes, max abs difference to the PEFT adapter's weights."""
    import gguf
    from safetensors.numpy import load_file

    reader = gguf.GGUFReader(str(gguf_file))
    fields = {k: f.contents() for k, f in reader.fields.items() if k.startswith(("adapter.", "general.arch"))}
    if fields.get("adapter.type") != "lora" or abs(float(fields.get("adapter.lora.alpha", -1)) - alpha) > 1e-6:
        raise LoraGgufError(f"{gguf_file}: adapter metadata {fields} does not say lora with alpha {alpha}")
    arch = {v: k for k, v in gguf.MODEL_ARCH_NAMES.items()}[fields["general.architecture"]]
    names = gguf.get_tensor_name_map(arch, int(base_config["num_hidden_layers"]))
    tensors = {t.name: t for t in reader.tensors}
    heads = int(base_config["num_attention_heads"])
    kv_heads = int(base_config.get("num_key_value_heads") or heads)
    rows = []
    weights = load_file(str(adapter / "adapter_model.safetensors"))
    for key in sorted(k for k in weights if k.endswith(".lora_A.weight")):
        module = key.removeprefix("base_model.model.").removesuffix(".lora_A.weight")
        base_name = names.get_name(module + ".weight", try_suffixes=(".weight",))
        if base_name is None:
            raise LoraGgufError(f"no GGUF tensor name for module {module}")
        row: dict[str, Any] = {"module": module, "gguf": base_name}
        for part, peft_key in (("a", key), ("b", key.replace(".lora_A.", ".lora_B."))):
            name = f"{base_name}.lora_{part}"
            if name not in tensors:
                raise LoraGgufError(f"{gguf_file}: tensor {name} (from {module}) is missing")
            t = tensors[name]
            got = gguf.quants.dequantize(t.data, t.tensor_type).astype(np.float32).reshape(weights[peft_key].shape)
            want = weights[peft_key].astype(np.float32)
            diff = float(np.abs(got - want).max())
            if part == "b" and module.endswith(("q_proj", "k_proj")):
                permuted = _llama_permute(want, heads if module.endswith("q_proj") else kv_heads)
                diff = min(diff, float(np.abs(got - permuted).max()))
            row[f"shape_{part}"] = list(want.shape)
            row[f"max_abs_diff_{part}"] = diff
        rows.append(row)
    if not rows:
        raise LoraGgufError(f"{adapter} holds no lora_A/lora_B weights")
    return rows


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m tuneforge.export.gguf_lora", description=__doc__.split("\n")[0])
    p.add_argument("--fetch", action="store_true", help=f"download {LLAMA_CPP_PYTHON}'s converter into the cache")
    p.add_argument("--dest", help=f"target folder (default: {default_dir()})")
    p.add_argument("--if-missing", action="store_true", help="do nothing when the converter is already there")
    args = p.parse_args(argv)
    if not args.fetch:
        p.print_help()
        return 2
    dest = Path(args.dest) if args.dest else default_dir()
    if args.if_missing and (dest / SCRIPT).is_file():
        print(dest / SCRIPT)
        return 0
    print(fetch(dest))
    return 0


if __name__ == "__main__":
    sys.exit(main())
