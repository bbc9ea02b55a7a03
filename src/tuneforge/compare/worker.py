"""One arm answering the held-out task in its own process: `python -m tuneforge.compare.worker SPEC.json`.

A process per arm makes its peak RSS (ru_maxrss) its own: the model (with the arm's adapter), its prompts and
the answering. The spec names the comparison's config, the arm, its prompts file and its trained run; the
record holds the model's raw responses (log-likelihoods, generated text: the comparison scores them), the
answering seconds (generation and scoring calls only, not loading; wall clock, and this process's CPU time), the
prompt and completion tokens of every answer, the process's peak RSS and, for a model on CUDA, the allocator's
peak (torch.cuda.max_memory_allocated). A failure becomes a record with its error.
"""

from __future__ import annotations

import json
import sys
import time
from pathlib import Path
from typing import Any

from tuneforge.sweep.folder import spec_main, write_failure, write_record
from tuneforge.utils.memory import cuda_peak_mb, peak_rss_mb


def virtual_tokens(output: Path | None) -> int:
    """Soft-prompt positions an adapter adds to every prompt (prompt tuning, P-tuning); prefix tuning's prefix
    is key/value cache, not input positions, and adds none."""
    conf = output / "adapter_config.json" if output is not None else None
    if conf is None or not conf.is_file():
        return 0
    peft = json.loads(conf.read_text(encoding="utf-8"))
    if peft.get("peft_type") == "PREFIX_TUNING":
        return 0
    return int(peft.get("num_virtual_tokens") or 0)


def answer_arm(spec: dict[str, Any]) -> dict[str, Any]:
    """The arm's responses to every held-out item, with seconds, tokens and peak RSS; written to spec["record"]."""
    import torch

    from tuneforge.compare.context import apply_context
    from tuneforge.compare.source import prepare_source
    from tuneforge.eval.lm import LM
    from tuneforge.eval.run import answer
    from tuneforge.inference import LocalEngine
    from tuneforge.methods.outputs import count_parameters
    from tuneforge.runs import RunDir, model_config_of_run
    from tuneforge.stages import load_config

    started = time.perf_counter()
    cfg = load_config(spec["config"])
    if cfg.train.threads:  # the same threads as the arm's training, so answer seconds compare across arms
        torch.set_num_threads(cfg.train.threads)
    loaded = prepare_source(cfg, Path(spec["out"])).task
    context = json.loads(Path(spec["prompts"]).read_text(encoding="utf-8")) if spec.get("prompts") else None
    items = apply_context(loaded.items, context)
    model_cfg, output, tool_format = cfg.model, None, "auto"
    if spec.get("run"):
        model_cfg, output = model_config_of_run(Path(spec["run"]))
        tool_format = RunDir(Path(spec["run"])).tool_format()
    engine = LocalEngine(model_cfg, output)
    lm = LM(engine.model, engine.tokenizer, cfg.eval.batch_size, True, tool_format)
    task = loaded.task
    torch.manual_seed(cfg.eval.seed)
    requests = task.prepare(items, lm)
    at, cpu_at = time.perf_counter(), time.process_time()
    responses = answer(lm, requests, f"{spec['arm']} {loaded.name}", task.max_new_tokens)
    answer_s, answer_cpu_s = time.perf_counter() - at, time.process_time() - cpu_at
    extra = virtual_tokens(output)
    prompt_tokens, completion_tokens = [], []
    for req, resp in zip(requests, responses, strict=True):
        contexts = {tuple(ctx) for ctx, _ in req.pairs}  # one question's choices share their context
        prompt_tokens.append(extra + len(req.prompt or ()) + (0 if req.prompt else sum(len(c) for c in contexts)))
        scored = sum(len(cont) for _, cont in req.pairs)  # log-likelihood answers: the continuations scored
        completion_tokens.append(scored + (len(lm.encode(resp.text)) if req.prompt is not None else 0))
    _, total = count_parameters(engine.model)
    record = {
        "arm": spec["arm"],
        "status": "ok",
        "n": len(items),
        "item_ids": [i.example.id for i in items],
        "fingerprint": spec["fingerprint"],
        "responses": [{"scores": [[s.logprob, s.tokens] for s in r.scores], "text": r.text} for r in responses],
        "answer_s": round(answer_s, 3),  # wall clock
        "answer_cpu_s": round(answer_cpu_s, 3),  # this process's CPU time, every thread's
        "prompt_tokens": prompt_tokens,
        "completion_tokens": completion_tokens,
        "virtual_tokens": extra,
        "total_params": total,
        "peak_rss_mb": round(peak_rss_mb(), 1),
        "cuda_peak_mb": _round(cuda_peak_mb(next(engine.model.parameters()).device)),
        "wall_s": round(time.perf_counter() - started, 1),
    }
    write_record(Path(spec["record"]), record)
    return record


def _round(mb: float | None) -> float | None:
    return None if mb is None else round(mb, 1)


def failure(spec: dict[str, Any], error: BaseException) -> dict[str, Any]:
    """The record of an arm that failed, written where its record goes."""
    return write_failure(spec, error, "arm")


def main(argv: list[str]) -> int:
    return spec_main(argv, answer_arm, failure)


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
