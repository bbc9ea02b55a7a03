"""The REWARDS table: what stage grpo can score a sampled answer with, one keyword-built row per reward.

Each row builds, from its `grpo.rewards` entry (`tuneforge.config.RewardSpec`), a reward function in TRL's
shape, `f(prompts, completions, completion_ids, **columns) -> list[float]`, one value per answer; TRL sums
them with the entries' weights and logs each one's mean and std (`rewards/<label>/mean`). Most rewards score one
answer at a time, `(answer text, the sample's row) -> float`: an exception there is a RewardError naming the
reward and the sample ("file:row N"). The row holds the dataset's columns (`answer`, `tools`, `source`, …, see
tuneforge.data.prompts), the `prompt` messages and the answer's `completion_ids`.

The config names the rows without importing them (`tuneforge.config.REWARD_PARAMS`, kept equal by a test).
Your own function (`{file: my_rewards.py, function: f}`) is read from its file only when the stage runs.
"""

from __future__ import annotations

import importlib.util
import json
import math
import re
import traceback
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from tuneforge.config import GrpoConfig, ModelConfig, RewardSpec
from tuneforge.errors import TuneforgeError
from tuneforge.runs import RunDir, model_config_of_run

Scorer = Callable[[str, Mapping[str, Any]], float]  # (answer text, the sample's row) -> reward
BatchReward = Callable[..., list[float]]  # TRL's reward function shape
# What TRL passes to every reward function besides the dataset's columns.
TRL_KWARGS = ("trainer_state", "log_extra", "log_metric", "environments")


class RewardError(TuneforgeError, RuntimeError):
    """A reward that cannot be built or failed on an answer; names the reward, its file and the sample."""


@dataclass(frozen=True)
class RewardContext:
    """What a reward may need besides its own entry."""

    grpo: GrpoConfig
    model: ModelConfig  # the policy's model section (the reward model's tokenizer is its own)


@dataclass(frozen=True, kw_only=True)
class Reward:
    name: str  # the `name:` of a grpo.rewards entry
    summary: str
    build: Callable[[RewardSpec, RewardContext], Scorer | BatchReward]
    per_answer: bool = True  # build returns a Scorer (one answer at a time), else a whole-batch function
    columns: Callable[[RewardSpec], tuple[str, ...]] = lambda spec: ()  # dataset columns it reads


# --- the rewards ----------------------------------------------------------------------------------------

_ANSWER_TAG = re.compile(r"<answer>(.*?)</answer>", re.DOTALL)


def final_answer(text: str) -> str:
    """The text inside the last <answer>…</answer>, if the answer has that layout, else the whole answer."""
    found = _ANSWER_TAG.findall(text)
    return found[-1].strip() if found else text.strip()


def exact_answer(spec: RewardSpec, ctx: RewardContext) -> Scorer:
    from tuneforge.eval.metrics import extract_answer, normalize_answer, parse_number, same_number

    column = spec.column or "answer"

    def score(text: str, row: Mapping[str, Any]) -> float:
        reference = row.get(column)
        if reference is None or str(reference).strip() == "":
            raise ValueError(f"the sample has no reference in column {column!r}")
        answer, gold = final_answer(text), parse_number(str(reference))
        if gold is not None:  # a number: the eval harness's reading of the final number
            return float(same_number(extract_answer(answer), gold, spec.tolerance))
        return float(normalize_answer(answer) == normalize_answer(str(reference)))

    return score


def pattern_match(spec: RewardSpec, ctx: RewardContext) -> Scorer:
    from tuneforge.config.grpo_section import THINK_ANSWER

    pattern = spec.pattern or THINK_ANSWER
    compiled = re.compile(pattern, re.DOTALL) if spec.name == "format" else re.compile(pattern)

    def score(text: str, row: Mapping[str, Any]) -> float:
        found = compiled.fullmatch(text.strip()) if spec.match == "full" else compiled.search(text)
        return 1.0 if found else 0.0

    return score


def tool_call_valid(spec: RewardSpec, ctx: RewardContext) -> Scorer:
    from tuneforge.data.toolcalls import parse_calls
    from tuneforge.data.toolschema import argument_problem

    def score(text: str, row: Mapping[str, Any]) -> float:
        tools = json.loads(row.get("tools") or "[]")
        if not tools:
            raise ValueError("the sample offers no tools (its `tools` column is empty)")
        _, calls = parse_calls(text)
        return float(bool(calls) and all(argument_problem(c.name, c.arguments, tools) is None for c in calls))

    return score


def length_penalty(spec: RewardSpec, ctx: RewardContext) -> Scorer:
    limit = ctx.grpo.max_completion_length
    target = spec.target or limit // 2

    def score(text: str, row: Mapping[str, Any]) -> float:
        over = len(row["completion_ids"]) - target
        return -min(1.0, over / max(1, limit - target)) if over > 0 else 0.0

    return score


def reward_model(spec: RewardSpec, ctx: RewardContext) -> BatchReward:
    """A stage rm run's model scoring prompt + answer, rendered by its own tokenizer's chat template."""
    import torch

    model, tokenizer = load_reward_model(Path(str(spec.run)))

    def score(prompts: list[Any], completions: list[Any], **columns: Any) -> list[float]:
        texts = []
        for prompt, completion in zip(prompts, completions, strict=True):
            if isinstance(prompt, list):
                messages = [*prompt, {"role": "assistant", "content": answer_text(completion)}]
                texts.append(tokenizer.apply_chat_template(messages, tokenize=False))
            else:
                texts.append(prompt + answer_text(completion))
        batch = tokenizer(texts, return_tensors="pt", padding=True, add_special_tokens=False)
        with torch.inference_mode():
            return [float(x) for x in model(**batch).logits[:, 0]]

    return score


def load_reward_model(run: Path) -> tuple[Any, Any]:
    """The reward model of a finished stage rm run (adapter merged where it can be) and its tokenizer."""
    from transformers import AutoModelForSequenceClassification

    from tuneforge.inference.base import load_base
    from tuneforge.methods import METHODS, load_trained, merge, saved_params
    from tuneforge.models.loader import load_model, load_tokenizer

    stage = _run_stage(RunDir(run))
    if stage != "rm":
        raise RewardError(f"reward_model: {run} is a stage {stage!r} run; it needs a finished stage rm run")
    model_cfg, output = model_config_of_run(run)
    tokenizer = load_tokenizer(model_cfg)
    if (output / "config.json").is_file():  # full / freeze: the whole reward model is in model/
        whole = model_cfg.model_copy(update={"path": str(output)})
        model = load_model(whole, tokenizer, AutoModelForSequenceClassification)
    else:
        base = load_base(model_cfg, tokenizer, AutoModelForSequenceClassification, num_labels=1)  # with model.adapter
        model = load_trained(base, output, trust_remote_code=model_cfg.trust_remote_code)
        params = saved_params(output)
        if params is not None and METHODS[params.name].mergeable:
            model = merge(model)
    model.config.pad_token_id = tokenizer.pad_token_id  # the head reads the last non-pad token
    return model.eval(), tokenizer


def _run_stage(run: RunDir) -> str:
    import yaml

    if not run.config.is_file():
        raise RewardError(f"reward_model: {run.root} is not a tuneforge run folder (no config.yaml)")
    return str((yaml.safe_load(run.config.read_text(encoding="utf-8")) or {}).get("stage", "sft"))


def python_function(spec: RewardSpec, ctx: RewardContext) -> Scorer:
    """`function` from the .py `file`: f(answer: str, sample: dict) -> float (docs/rl.md)."""
    path = Path(str(spec.file)).expanduser().resolve()
    where = f"reward file {path}"
    module_spec = importlib.util.spec_from_file_location(f"tuneforge_user_rewards_{abs(hash(path))}", path)
    if module_spec is None or module_spec.loader is None:
        raise RewardError(f"{where}: not a Python file that can be imported")
    module = importlib.util.module_from_spec(module_spec)
    try:
        module_spec.loader.exec_module(module)
    except FileNotFoundError:
        raise RewardError(f"{where} does not exist") from None
    except Exception as e:  # the user's code: any failure to import it is theirs to fix
        raise RewardError(f"{where} cannot be imported: {type(e).__name__}: {e}{_user_line(e, path)}") from e
    fn = getattr(module, str(spec.function), None)
    if not callable(fn):
        defined = sorted(n for n, v in vars(module).items() if callable(v) and not n.startswith("_"))
        raise RewardError(
            f"{where} defines no function {spec.function!r} (it defines: {', '.join(defined) or 'no functions'})"
        )
    return fn  # type: ignore[no-any-return]


def _column_of(spec: RewardSpec) -> tuple[str, ...]:
    return (spec.column,) if spec.column else ("answer",) if spec.name == "exact_answer" else ()


REWARDS: dict[str, Reward] = {
    row.name: row
    for row in (
        Reward(
            name="exact_answer",
            summary="1 if the answer's final number (or text) equals the reference column, else 0",
            build=exact_answer,
            columns=_column_of,
        ),
        Reward(name="regex", summary="1 if the answer matches `pattern` (full or search), else 0", build=pattern_match),
        Reward(
            name="format",
            summary="1 if the answer has the `<think>…</think><answer>…</answer>` layout (or `pattern`), else 0",
            build=pattern_match,
        ),
        Reward(
            name="tool_call_valid",
            summary="1 if the answer holds tool calls that fit the sample's tool schemas (`tools`), else 0",
            build=tool_call_valid,
            columns=lambda spec: ("tools",),
        ),
        Reward(
            name="length_penalty",
            summary="0 up to `target` tokens, falling linearly to -1 at grpo.max_completion_length",
            build=length_penalty,
        ),
        Reward(
            name="reward_model",
            summary="the score of a stage rm run's model (`run`) on prompt + answer",
            build=reward_model,
            per_answer=False,
        ),
        Reward(
            name="python",
            summary="your own f(answer, sample) -> float from `file` (implied by `file:`)",
            build=python_function,
            columns=_column_of,
        ),
    )
}


# --- building what TRL calls -----------------------------------------------------------------------------


def reward_columns(specs: Sequence[RewardSpec]) -> tuple[str, ...]:
    """The dataset columns the rewards read, for the prompt builder."""
    return tuple(dict.fromkeys(c for spec in specs for c in REWARDS[spec.name].columns(spec)))


def build_rewards(ctx: RewardContext, record: Callable[..., None] | None = None) -> list[BatchReward]:
    """TRL's reward functions for grpo.rewards, in order, each named by its entry's label (unique)."""
    labels: list[str] = []
    out = []
    for spec in ctx.grpo.rewards:
        label = spec.label if spec.label not in labels else f"{spec.label}_{len(labels)}"
        labels.append(label)
        row = REWARDS[spec.name]
        built = row.build(spec, ctx)
        fn = per_answer(label, spec, built) if row.per_answer else whole_batch(label, spec, built)  # type: ignore[arg-type]  # per_answer says which
        out.append(_recorded(fn, label, record) if record is not None else fn)
    return out


def per_answer(label: str, spec: RewardSpec, score: Scorer) -> BatchReward:
    where = f" ({spec.file}:{spec.function})" if spec.file else ""

    def reward(prompts: list[Any], completions: list[Any], completion_ids: list[Any], **kw: Any) -> list[float]:
        rows = sample_rows(prompts, completion_ids, kw)
        values = []
        for completion, row in zip(completions, rows, strict=True):
            text = answer_text(completion)
            try:
                value = score(text, row)
            except Exception as e:  # a reward's failure, named with its sample (the original is chained)
                raise RewardError(
                    f"reward {label!r}{where} failed on sample {row.get('source', '?')}: {type(e).__name__}: {e}"
                    f"{_user_line(e, spec.file)} (answer: {text[:80]!r})"
                ) from e
            values.append(_number(value, f"{label!r}{where}", row, text))
        return values

    reward.__name__ = label  # TRL logs rewards/<__name__>/mean
    return reward


def whole_batch(label: str, spec: RewardSpec, fn: BatchReward) -> BatchReward:
    def reward(prompts: list[Any], completions: list[Any], completion_ids: list[Any], **kw: Any) -> list[float]:
        rows = sample_rows(prompts, completion_ids, kw)
        try:
            values = fn(prompts, completions)
        except Exception as e:
            sources = ", ".join(str(r.get("source", "?")) for r in rows[:3])
            raise RewardError(
                f"reward {label!r} failed on a batch of {len(rows)} answers (samples {sources}, …): "
                f"{type(e).__name__}: {e}"
            ) from e
        return [_number(v, repr(label), r, answer_text(c)) for v, r, c in zip(values, rows, completions, strict=True)]

    reward.__name__ = label
    return reward


def _recorded(fn: BatchReward, label: str, record: Callable[..., None]) -> BatchReward:
    def reward(prompts: list[Any], completions: list[Any], completion_ids: list[Any], **kw: Any) -> list[float]:
        values = fn(prompts, completions, completion_ids, **kw)
        state = kw.get("trainer_state")
        step = (state.global_step if state is not None else 0) + 1  # the step these answers train
        record(label, step, prompts, [answer_text(c) for c in completions], kw.get("source"), values)
        return values

    reward.__name__ = label
    return reward


def sample_rows(prompts: list[Any], completion_ids: list[Any], kw: Mapping[str, Any]) -> list[dict[str, Any]]:
    columns = {k: v for k, v in kw.items() if k not in TRL_KWARGS and isinstance(v, list)}
    return [
        {**{k: v[i] for k, v in columns.items()}, "prompt": prompts[i], "completion_ids": completion_ids[i]}
        for i in range(len(prompts))
    ]


def answer_text(completion: Any) -> str:
    """TRL's completion: text, or (conversational prompts) a list with the assistant message."""
    if isinstance(completion, list):
        return "".join(str(m.get("content", "")) for m in completion if isinstance(m, Mapping))
    return str(completion)


def _number(value: Any, named: str, row: Mapping[str, Any], text: str) -> float:
    if isinstance(value, bool):
        return float(value)
    if not isinstance(value, (int, float)) or not math.isfinite(value):
        raise RewardError(
            f"reward {named} returned {value!r} for sample {row.get('source', '?')} (answer: {text[:80]!r}); "
            "a reward must be a finite number"
        )
    return float(value)


def _user_line(error: BaseException, file: str | Path | None) -> str:
    """' at <file>:<line>' of the innermost frame in the user's reward file, if the error came from there."""
    if file is None:
        return ""
    path = str(Path(file).expanduser().resolve())
    frames = [f for f in traceback.extract_tb(error.__traceback__) if f.filename == path]
    if not frames and isinstance(error, SyntaxError) and error.lineno:
        return f" at {path}:{error.lineno}"
    return f" at {path}:{frames[-1].lineno}" if frames else ""
