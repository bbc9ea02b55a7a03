"""The worker side of `tuneforge bench speed` (one variant per process): train or score, then write a record.

Run by the parent (`tuneforge.bench.speed`) as `python -m tuneforge.bench.speed --worker SPEC RESULT`.
"""

from __future__ import annotations

import json
import logging
import time
from pathlib import Path
from typing import Any

from tuneforge.bench.speed import CSQA

log = logging.getLogger("tuneforge.bench")


def _heldout_loss(model: Any, rows: list[dict[str, Any]], tokenizer: Any) -> float:
    """Token-weighted mean loss over the held-out rows, plain forward, padded batches of 4."""
    import torch
    from transformers import DataCollatorForSeq2Seq

    collate = DataCollatorForSeq2Seq(tokenizer, padding=True, label_pad_token_id=-100)
    was_training = model.training
    model.eval()
    total, count = 0.0, 0
    with torch.no_grad():
        for start in range(0, len(rows), 4):
            batch = collate(rows[start : start + 4])
            n = int((batch["labels"][:, 1:] != -100).sum())
            total += float(model(**batch, use_cache=False).loss) * n
            count += n
    model.train(was_training)
    return total / max(count, 1)


def _probe_class() -> type:
    from transformers import TrainerCallback

    from tuneforge.utils.memory import peak_rss_mb

    class Probe(TrainerCallback):
        """Training seconds up to the last step's end (no saving, no evaluation), peak RSS there, and the
        held-out loss at the end."""

        def __init__(self, heldout: list[dict[str, Any]], tokenizer: Any) -> None:
            self.heldout, self.tokenizer = heldout, tokenizer
            self.record: dict[str, Any] = {}
            self.started = 0.0

        def on_train_begin(self, args: Any, state: Any, control: Any, **kwargs: Any) -> None:
            self.started = time.perf_counter()

        def on_step_end(self, args: Any, state: Any, control: Any, **kwargs: Any) -> None:
            self.record["train_s"] = time.perf_counter() - self.started
            self.record["steps"] = state.global_step
            self.record["peak_rss_mb"] = round(peak_rss_mb(), 1)

        def on_log(self, args: Any, state: Any, control: Any, logs: Any = None, **kwargs: Any) -> None:
            if logs and "loss" in logs:
                self.record.setdefault("losses", []).append(round(float(logs["loss"]), 5))

        def on_train_end(self, args: Any, state: Any, control: Any, **kwargs: Any) -> None:
            self.record["heldout_loss"] = _heldout_loss(kwargs["model"], self.heldout, self.tokenizer)

    return Probe


def _train_hf(cfg: Any, train: Any, probe: Any, tokenizer: Any, out: Path) -> None:
    """The plain Hugging Face path, as its documentation writes it."""
    import torch
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM, DataCollatorForSeq2Seq, Trainer, TrainingArguments, set_seed

    from tuneforge.models.loader import resolve_model_path

    set_seed(cfg.train.seed)
    model = AutoModelForCausalLM.from_pretrained(resolve_model_path(cfg.model), dtype=torch.float32)
    model.config.use_cache = False
    lora = LoraConfig(task_type="CAUSAL_LM", r=8, lora_alpha=16, lora_dropout=0.0, target_modules="all-linear")
    peft_model = get_peft_model(model, lora)
    args = TrainingArguments(
        output_dir=str(out),
        num_train_epochs=1,
        per_device_train_batch_size=cfg.train.batch_size,
        learning_rate=cfg.train.lr,
        lr_scheduler_type=cfg.train.lr_scheduler,
        logging_steps=1,
        save_strategy="no",
        report_to="none",
        use_cpu=True,
        seed=cfg.train.seed,
        data_seed=cfg.train.seed,
        remove_unused_columns=False,
        disable_tqdm=True,
    )
    collator = DataCollatorForSeq2Seq(tokenizer, padding=True, label_pad_token_id=-100)
    trainer = Trainer(model=peft_model, args=args, train_dataset=train, data_collator=collator, callbacks=[probe])
    trainer.train()


def data_counts(rows: Any) -> dict[str, int]:
    """Real tokens, label positions and the sum of squared lengths of the training rows."""
    lengths = [len(ids) for ids in rows["input_ids"]]
    labels = sum(sum(1 for x in lab[1:] if x != -100) for lab in rows["labels"])
    return {
        "samples": len(lengths),
        "tokens": sum(lengths),
        "label_tokens": labels,
        "sum_t2": sum(t * t for t in lengths),
    }


def useful_flops(model_dims: dict[str, int], counts: dict[str, int]) -> float:
    """FLOP_FORMULA over the epoch."""
    d, v, layers = model_dims["hidden"], model_dims["vocab"], model_dims["layers"]
    return (
        counts["tokens"] * (4 * model_dims["frozen_linear"] + 6 * model_dims["lora"])
        + counts["label_tokens"] * 4 * d * v
        + 6 * layers * d * counts["sum_t2"]
    )


def model_dims(cfg: Any, r: int = 8) -> dict[str, int]:
    """Sizes for the FLOP count, from the model's config (Llama-style decoder, LoRA on all its linear layers)."""
    from transformers import AutoConfig

    from tuneforge.models.loader import resolve_model_path

    c = AutoConfig.from_pretrained(resolve_model_path(cfg.model))
    d, inter = c.hidden_size, c.intermediate_size
    kv = c.num_key_value_heads * (getattr(c, "head_dim", None) or d // c.num_attention_heads)
    shapes = [(d, d), (d, kv), (d, kv), (d, d), (d, inter), (d, inter), (inter, d)]  # q k v o gate up down
    return {
        "hidden": d,
        "vocab": c.vocab_size,
        "layers": c.num_hidden_layers,
        "frozen_linear": c.num_hidden_layers * sum(i * o for i, o in shapes),
        "lora": c.num_hidden_layers * sum(r * (i + o) for i, o in shapes),
    }


def measure_peaks() -> dict[str, float]:
    """fp32 (default route, oneDNN route) and bf16 matmul FLOP/s in this process, before anything loads."""
    import torch

    from tuneforge.utils.cpu import matmul_flops, use_onednn_fp32

    peaks = {"fp32_default": matmul_flops(torch.float32)}
    if use_onednn_fp32(True).used:
        peaks["fp32_onednn"] = matmul_flops(torch.float32)
    use_onednn_fp32(False)
    peaks["bf16"] = matmul_flops(torch.bfloat16, size=512)  # emulated bf16 is slow: a smaller square
    peaks["fp32"] = max(peaks["fp32_default"], peaks.get("fp32_onednn", 0.0))
    return peaks


def train_worker(spec: dict[str, Any]) -> dict[str, Any]:
    from tuneforge.data.build import build_sft
    from tuneforge.models.loader import load_tokenizer
    from tuneforge.stages import load_config, run_stage
    from tuneforge.stages.common import set_threads

    cfg = load_config(spec["config"], spec["overrides"])
    set_threads(cfg)
    peaks = measure_peaks()
    tokenizer = load_tokenizer(cfg.model)
    data = build_sft(cfg.data, tokenizer)  # the same samples every variant trains on
    assert data.val is not None  # data_section always holds out `heldout` samples
    heldout = [data.val[i] for i in range(len(data.val))]
    probe = _probe_class()(heldout, tokenizer)
    if spec["kind"] == "hf":
        _train_hf(cfg, data.train, probe, tokenizer, Path(spec["out"]))
    else:
        run_stage(cfg, callbacks=[probe])
    counts = data_counts(data.train[:])
    flops = useful_flops(model_dims(cfg), counts)
    r = probe.record
    seconds = r["train_s"]
    return {
        **r,
        **counts,
        "train_s": round(seconds, 2),
        "s_per_step": round(seconds / r["steps"], 3),
        "tokens_per_s": round(counts["tokens"] / seconds, 1),
        "label_tokens_per_s": round(counts["label_tokens"] / seconds, 1),
        "heldout_loss": round(r["heldout_loss"], 5),
        "useful_flops": flops,
        "flops_per_s": flops / seconds,
        "peaks": peaks,
        "frac_fp32_peak": flops / seconds / peaks["fp32"],
        "frac_bf16_peak": flops / seconds / peaks["bf16"],
    }


def mc_pairs(tokenizer: Any, items: int) -> list[tuple[list[int], list[int]]]:
    """Cloze multiple choice: context 'Question: ...\\nAnswer:', one continuation per choice."""
    from tuneforge.eval.readers import read_csqa

    def enc(text: str) -> list[int]:
        return list(tokenizer(text, add_special_tokens=False)["input_ids"])

    pairs = []
    for ex in read_csqa(CSQA, "test")[:items]:
        ctx = enc(f"Question: {ex.question}\nAnswer:")
        pairs += [(ctx, enc(f" {choice}")) for choice in ex.choices]
    return pairs


def naive_loglikelihood(model: Any, ctx: list[int], cont: list[int]) -> float:
    """One pair, one full forward over context + continuation, no batching, no cache reuse."""
    import torch

    ids = torch.tensor([ctx + cont])
    with torch.inference_mode():
        logp = torch.log_softmax(model(input_ids=ids).logits[0, len(ctx) - 1 : -1].float(), dim=-1)
    return float(logp.gather(-1, torch.tensor(cont)[:, None]).sum())


def eval_worker(spec: dict[str, Any]) -> dict[str, Any]:
    from tuneforge.eval.lm import LM
    from tuneforge.models.loader import load_model, load_tokenizer
    from tuneforge.stages import load_config
    from tuneforge.stages.common import set_threads
    from tuneforge.utils.cpu import use_onednn_fp32

    cfg = load_config(spec["config"], spec["overrides"])
    set_threads(cfg)
    tokenizer = load_tokenizer(cfg.model)
    model = load_model(cfg.model, tokenizer).eval()
    pairs = mc_pairs(tokenizer, spec["items"])
    record: dict[str, Any] = {"items": spec["items"], "pairs": len(pairs)}
    for route in (False, True):  # the default fp32 route, then oneDNN (as the eval path would use it)
        key = "onednn" if route else "default"
        if route and not use_onednn_fp32(True).used:
            continue
        lm = LM(model, tokenizer, batch_size=8, progress=False)
        lm.loglikelihoods(pairs[:10])  # warm-up
        started = time.perf_counter()
        naive = [naive_loglikelihood(model, c, x) for c, x in pairs]
        record[f"naive_s_{key}"] = round(time.perf_counter() - started, 2)
        started = time.perf_counter()
        batched = [s.logprob for s in lm.loglikelihoods(pairs)]
        record[f"batched_s_{key}"] = round(time.perf_counter() - started, 2)
        record[f"max_abs_diff_{key}"] = max(abs(a - b) for a, b in zip(naive, batched, strict=True))
    use_onednn_fp32(False)
    record["speedup"] = round(record["naive_s_default"] / record["batched_s_default"], 2)
    if "batched_s_onednn" in record:
        record["speedup_onednn"] = round(record["naive_s_default"] / record["batched_s_onednn"], 2)
    return record


def worker_main(spec_path: Path, result_path: Path) -> int:
    import traceback

    from tuneforge.utils.logs import offline_env, setup_logging
    from tuneforge.utils.memory import peak_rss_mb

    offline_env()
    setup_logging(False)
    spec = json.loads(spec_path.read_text(encoding="utf-8"))
    try:
        record = eval_worker(spec) if spec["kind"] == "eval" else train_worker(spec)
        code = 0
    except Exception as e:  # the variant's failed row
        record = {"error": f"{type(e).__name__}: {e}"[:500], "traceback": traceback.format_exc()}
        code = 1
    record["peak_rss_process_mb"] = round(peak_rss_mb(), 1)
    result_path.write_text(json.dumps(record, indent=2), encoding="utf-8")
    return code
