"""Tokenizer and model loading through the HF Auto classes, from local folders only.

`model.path` is the embedded model, a folder on disk, or a hub id (org/name) already in the local Hugging Face
cache; a hub id is downloaded only when the user opts in (`model.download: true`). Weights load from safetensors
only (pickle files can run code) and remote code runs only when the user sets `trust_remote_code`.
"""

from __future__ import annotations

import logging
import os
import re
import subprocess
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Any, cast

from tuneforge.config import ModelConfig
from tuneforge.models import ModelError
from tuneforge.models.embedded import embedded_model_dir, is_embedded

if TYPE_CHECKING:
    import torch
    from transformers import PreTrainedModel, PreTrainedTokenizerBase

log = logging.getLogger("tuneforge.models")

# Used only when a tokenizer has neither a pad nor an EOS token; load_model grows the embedding to fit it.
FALLBACK_PAD = "<|pad|>"


def _local_folder(value: str, key: str) -> Path:
    path = Path(value).expanduser()
    if not path.exists():
        raise ModelError(
            f"{key}={value!r}: no such folder. tuneforge does not download from the Hugging Face hub at "
            "run time; download the model once (e.g. `hf download <repo> --local-dir <folder>`) and set "
            f"{key} to that folder, or use the embedded model: model.path=embedded"
        )
    if not path.is_dir():
        raise ModelError(f"{key}={value!r} is a file; give the HF model folder that contains it")
    return path


# org/name as the hub spells repository ids; a path that exists on disk always wins over this reading
HUB_ID = re.compile(r"^[A-Za-z0-9][\w.-]*/[\w.-]+$")
# what a model download fetches: configs, tokenizer files, safetensors weights; never pickle (.bin) weights
HUB_FILES = ["*.json", "*.safetensors", "*.txt", "*.model", "*.jinja", "*.tiktoken"]


def is_hub_id(value: str) -> bool:
    return HUB_ID.match(value) is not None and not Path(value).expanduser().exists()


def hub_folder(repo: str, download: bool, key: str = "model.path") -> Path:
    """The local snapshot of hub repository `repo` from the Hugging Face cache; with `download`, fetched into
    the cache first when it is not there (HF_HOME / HF_HUB_CACHE say where the cache is)."""
    from huggingface_hub import snapshot_download
    from huggingface_hub.errors import LocalEntryNotFoundError

    try:
        return Path(snapshot_download(repo, local_files_only=True, cache_dir=os.environ.get("HF_HUB_CACHE")))
    except (LocalEntryNotFoundError, FileNotFoundError):
        if not download:
            raise ModelError(
                f"{key}={repo!r}: no such folder, and the hub model {repo} is not in the local Hugging Face "
                "cache. tuneforge downloads only when asked: set model.download=true (online), or download it "
                f"once (`hf download {repo}`), or give a model folder, or use the embedded model: model.path=embedded"
            ) from None
    return _download(repo, key)


def _download(repo: str, key: str) -> Path:
    """Fetch `repo` into the cache in a child process: this process stays offline (tuneforge sets
    HF_HUB_OFFLINE=1, utils.logs.offline_env), and huggingface_hub reads that switch once, when imported."""
    log.info("downloading %s from the Hugging Face hub into the local cache (model.download=true)", repo)
    code = (
        "import sys; from huggingface_hub import snapshot_download as s; "
        "print(s(sys.argv[1], allow_patterns=sys.argv[2:]))"
    )
    env = {**os.environ, "HF_HUB_OFFLINE": "0", "TRANSFORMERS_OFFLINE": "0"}
    done = subprocess.run(
        [sys.executable, "-c", code, repo, *HUB_FILES], env=env, capture_output=True, text=True, check=False
    )
    if done.returncode != 0:
        last = (done.stderr.strip().splitlines() or ["no output"])[-1]
        raise ModelError(f"{key}={repo!r}: download from the Hugging Face hub failed: {last}")
    return Path(done.stdout.strip().splitlines()[-1])


def resolve_model_path(cfg: ModelConfig) -> Path:
    """The local folder of `cfg.path`: the embedded model's cached checkpoint, a folder with config.json, or a
    hub id's snapshot in the local Hugging Face cache (downloaded there first only with model.download)."""
    if is_embedded(cfg.path):
        return embedded_model_dir()
    path = hub_folder(cfg.path, cfg.download) if is_hub_id(cfg.path) else _local_folder(cfg.path, "model.path")
    if not (path / "config.json").is_file():
        raise ModelError(
            f"model.path={cfg.path!r} has no config.json, so it is not a Hugging Face model folder"
            + (" (a GGUF file is not loaded directly; convert it first)" if any(path.glob("*.gguf")) else "")
        )
    return path


def _tokenizer_folder(cfg: ModelConfig) -> Path:
    if cfg.tokenizer is None:
        return resolve_model_path(cfg)
    if is_embedded(cfg.tokenizer):
        return embedded_model_dir()
    if is_hub_id(cfg.tokenizer):
        return hub_folder(cfg.tokenizer, cfg.download, "model.tokenizer")
    return _local_folder(cfg.tokenizer, "model.tokenizer")


def read_chat_template(value: str) -> str:
    """`model.chat_template` is inline Jinja when it contains Jinja markup, otherwise a template file path."""
    if "{{" in value or "{%" in value:
        return value
    path = Path(value).expanduser()
    if not path.is_file():
        raise ModelError(
            f"model.chat_template={value!r} is neither a Jinja template (no '{{{{' or '{{%') nor an existing file"
        )
    return path.read_text(encoding="utf-8")


def load_tokenizer(cfg: ModelConfig) -> PreTrainedTokenizerBase:
    """The tokenizer, with the configured chat template, a pad token and right padding (for training)."""
    from transformers import AutoTokenizer

    folder = _tokenizer_folder(cfg)
    try:
        tokenizer = AutoTokenizer.from_pretrained(str(folder), trust_remote_code=cfg.trust_remote_code)
    except (OSError, ValueError) as e:
        raise ModelError(f"cannot load a tokenizer from {folder}: {e}") from e
    if cfg.chat_template is not None:
        tokenizer.chat_template = read_chat_template(cfg.chat_template)
    if tokenizer.pad_token is None:
        if tokenizer.eos_token is not None:
            # Padding positions are masked out of attention and loss, so reusing EOS as pad is harmless.
            tokenizer.pad_token = tokenizer.eos_token
        else:
            log.warning("tokenizer in %s has no pad or EOS token; adding %s", folder, FALLBACK_PAD)
            tokenizer.add_special_tokens({"pad_token": FALLBACK_PAD})
    tokenizer.padding_side = "right"
    return tokenizer


def _torch_dtype(name: str) -> torch.dtype:
    import torch  # lazily, like transformers: importing this module stays cheap

    return {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}[name]


def load_model(
    cfg: ModelConfig,
    tokenizer: PreTrainedTokenizerBase | None = None,
    auto_class: Any = None,
    **load_kwargs: Any,
) -> PreTrainedModel:
    """The causal LM of `cfg.path` in `cfg.dtype`; its embedding grows when the tokenizer has more tokens.

    `load_kwargs` go to `from_pretrained` as they are: what a method must set while the weights load, e.g.
    QLoRA's `quantization_config` (see `tuneforge.methods.model_load_kwargs`). They cannot override the
    settings that `cfg` owns (dtype, safetensors only, remote code). `auto_class` replaces
    AutoModelForCausalLM, e.g. AutoModelForSequenceClassification for a reward model (stage rm).
    """
    from transformers import AutoModelForCausalLM

    auto_class = auto_class or AutoModelForCausalLM
    owned = sorted(set(load_kwargs) & {"dtype", "torch_dtype", "use_safetensors", "trust_remote_code"})
    if owned:
        raise ModelError(f"load_model: {', '.join(owned)} come from the model config section, not load_kwargs")
    folder = resolve_model_path(cfg)
    if not any(folder.glob("*.safetensors")):
        raise ModelError(
            f"{folder} has no .safetensors weights; tuneforge does not load pickle (.bin) weights, which can "
            "run code. Convert them once, e.g. "
            "`AutoModelForCausalLM.from_pretrained(folder).save_pretrained(folder)`"
        )
    try:
        model = auto_class.from_pretrained(
            str(folder),
            dtype=_torch_dtype(cfg.dtype),
            use_safetensors=True,
            trust_remote_code=cfg.trust_remote_code,
            **load_kwargs,
        )
    except (OSError, ValueError) as e:
        hint = "" if cfg.trust_remote_code else " (if it ships its own code: model.trust_remote_code=true)"
        raise ModelError(f"cannot load a causal LM from {folder}: {e}{hint}") from e
    if tokenizer is not None:
        _fit_embeddings(model, tokenizer)
    return model


def _fit_embeddings(model: PreTrainedModel, tokenizer: PreTrainedTokenizerBase) -> None:
    rows = cast("torch.Tensor", model.get_input_embeddings().weight).shape[0]
    if len(tokenizer) > rows:
        log.info("resizing the embedding from %d to %d rows to fit the tokenizer", rows, len(tokenizer))
        model.resize_token_embeddings(len(tokenizer))
    # Generation and some collators read the pad id from the model config.
    if model.config.pad_token_id is None and tokenizer.pad_token_id is not None:
        model.config.pad_token_id = tokenizer.pad_token_id
