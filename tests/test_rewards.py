"""The REWARDS table on hand-written answers, and the grpo section's checks at load (no model)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from tuneforge.config import REWARD_PARAMS, ConfigError, GrpoConfig, ModelConfig, RewardSpec, load
from tuneforge.methods import METHOD_PARAMS
from tuneforge.stages import STAGES
from tuneforge.stages.rewards import REWARDS, RewardContext, RewardError, build_rewards, reward_columns

SOURCE = "dates.jsonl:row 3"
TOOLS = json.dumps(
    [
        {
            "type": "function",
            "function": {
                "name": "get_weather",
                "parameters": {
                    "type": "object",
                    "properties": {"city": {"type": "string"}, "days": {"type": "integer"}},
                    "required": ["city"],
                },
            },
        }
    ]
)


def scores(specs: list[dict[str, Any]], answers: list[str], **columns: Any) -> list[list[float]]:
    """Each reward's values for `answers` (one sample per answer), through the functions TRL calls."""
    grpo = GrpoConfig(rewards=[RewardSpec.model_validate(s) for s in specs], max_completion_length=10)
    funcs = build_rewards(RewardContext(grpo, ModelConfig()))
    n = len(answers)
    kw = {k: v if isinstance(v, list) else [v] * n for k, v in columns.items()}
    kw.setdefault("source", [SOURCE] * n)
    completions = [[{"role": "assistant", "content": a}] for a in answers]
    ids = kw.pop("completion_ids", [[0] * 3] * n)
    prompts = [[{"role": "user", "content": "q"}]] * n
    return [f(prompts=prompts, completions=completions, completion_ids=ids, trainer_state=None, **kw) for f in funcs]


def test_table_and_config_name_the_same_rewards() -> None:
    assert list(REWARDS) == list(REWARD_PARAMS)
    assert all(row.summary for row in REWARDS.values())


def test_exact_answer_numbers_text_and_answer_tags() -> None:
    answers = ["So the answer is 42.", "It is 41", "<think>6*7</think><answer>42</answer>", "42.0001"]
    assert scores([{"name": "exact_answer"}], answers, answer="42") == [[1.0, 0.0, 1.0, 1.0]]
    assert scores([{"name": "exact_answer"}], ["1980-10-18", "18/10/1980"], answer="1980-10-18") == [[1.0, 0.0]]
    got = scores([{"name": "exact_answer", "column": "gold"}], ["3/4", "0.75", "7"], gold="0.75")
    assert got == [[1.0, 1.0, 0.0]]


def test_regex_and_format() -> None:
    iso = {"name": "regex", "pattern": r"\d{4}-\d{2}-\d{2}"}
    assert scores([iso], ["2021-03-14", " 2021-03-14\n", "It is 2021-03-14"]) == [[1.0, 1.0, 0.0]]
    assert scores([{**iso, "match": "search"}], ["It is 2021-03-14", "March"]) == [[1.0, 0.0]]
    layout = ["<think>add them</think>\n<answer>5</answer>", "<answer>5</answer>", "<think>\nx\ny</think><answer>5"]
    assert scores([{"name": "format"}], layout) == [[1.0, 0.0, 0.0]]


def test_tool_call_valid_against_the_samples_schema() -> None:
    answers = [
        '<tool_call>\n{"name": "get_weather", "arguments": {"city": "Oslo"}}\n</tool_call>',
        '<tool_call>\n{"name": "get_weather", "arguments": {"city": "Oslo", "days": "two"}}\n</tool_call>',
        '<tool_call>\n{"name": "get_time", "arguments": {}}\n</tool_call>',
        '<tool_call>\n{"name": "get_weather", "arguments": {"days": 2}}\n</tool_call>',
        "It is sunny in Oslo.",
    ]
    assert reward_columns([RewardSpec(name="tool_call_valid")]) == ("tools",)
    assert scores([{"name": "tool_call_valid"}], answers, tools=TOOLS) == [[1.0, 0.0, 0.0, 0.0, 0.0]]
    with pytest.raises(RewardError, match=f"'tool_call_valid' failed on sample {SOURCE}.*offers no tools"):
        scores([{"name": "tool_call_valid"}], answers[:1], tools=None)


def test_length_penalty_from_token_counts() -> None:
    ids = [[0] * 4, [0] * 5, [0] * 8, [0] * 10]  # max_completion_length 10, target 5 by default (half)
    assert scores([{"name": "length_penalty"}], ["a"] * 4, completion_ids=ids) == [[0.0, 0.0, -0.6, -1.0]]
    assert scores([{"name": "length_penalty", "target": 8}], ["a"] * 4, completion_ids=ids)[0][2:] == [0.0, -1.0]
    with pytest.raises(ConfigError, match=r"target=10 must be below grpo\.max_completion_length=10"):
        load(
            {
                "stage": "grpo",
                "grpo": {"max_completion_length": 10, "rewards": [{"name": "length_penalty", "target": 10}]},
            }
        )


def test_user_function_from_a_file(tmp_path: Path) -> None:
    file = tmp_path / "my_rewards.py"
    file.write_text("def short(answer, sample):\n    return 1.0 if len(answer) < 4 else sample['answer'] == answer\n")
    spec = {"file": str(file), "function": "short"}
    assert RewardSpec.model_validate(spec).name == "python"
    assert scores([spec], ["abc", "abcdef", "abcdefg"], answer="abcdef") == [[1.0, 1.0, 0.0]]
    assert reward_columns([RewardSpec.model_validate(spec)]) == ()


def test_user_function_errors_name_the_file_function_and_sample(tmp_path: Path) -> None:
    file = tmp_path / "my_rewards.py"
    file.write_text("def broken(answer, sample):\n    return 1 / 0\n\ndef wordy(answer, sample):\n    return 'good'\n")
    with pytest.raises(RewardError, match=rf"{file} defines no function 'missing' \(it defines: broken, wordy\)"):
        scores([{"file": str(file), "function": "missing"}], ["a"])
    with pytest.raises(RewardError) as caught:
        scores([{"file": str(file), "function": "broken"}], ["a"])
    message = str(caught.value)
    assert "reward 'broken'" in message and SOURCE in message and "ZeroDivisionError" in message
    assert f"{file}:2" in message  # the line of the user's file that raised
    with pytest.raises(RewardError, match=f"'wordy'.*returned 'good' for sample {SOURCE}"):
        scores([{"file": str(file), "function": "wordy"}], ["a"])
    bad = tmp_path / "bad.py"
    bad.write_text("def f(:\n")
    with pytest.raises(RewardError, match=rf"reward file {bad} cannot be imported: SyntaxError"):
        scores([{"file": str(bad), "function": "f"}], ["a"])


def test_a_builtin_reward_that_raises_names_the_sample() -> None:
    with pytest.raises(RewardError, match=f"reward 'exact_answer' failed on sample {SOURCE}: .*no reference"):
        scores([{"name": "exact_answer"}], ["42"], answer=None)


def grpo_raw(**grpo: Any) -> dict[str, Any]:
    return {"stage": "grpo", "grpo": {"rewards": [{"name": "format"}], **grpo}}


def check(raw: dict[str, Any]) -> None:
    load(raw, methods=METHOD_PARAMS, stages=STAGES)


def test_refused_at_load_with_the_reason(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=r"unknown reward 'exact_anwser' \(did you mean 'exact_answer'\?\)"):
        check({"stage": "grpo", "grpo": {"rewards": [{"name": "exact_anwser"}]}})
    with pytest.raises(ConfigError, match="reward 'exact_answer' takes no `pattern`"):
        check({"stage": "grpo", "grpo": {"rewards": [{"name": "exact_answer", "pattern": "x"}]}})
    with pytest.raises(ConfigError, match="reward 'regex' needs a `pattern`"):
        check({"stage": "grpo", "grpo": {"rewards": [{"name": "regex"}]}})
    with pytest.raises(ConfigError, match="not a valid Python regular expression"):
        check({"stage": "grpo", "grpo": {"rewards": [{"name": "regex", "pattern": "(unclosed"}]}})
    with pytest.raises(ConfigError, match=r"reward file '.*nope\.py' does not exist"):
        check({"stage": "grpo", "grpo": {"rewards": [{"file": str(tmp_path / "nope.py"), "function": "f"}]}})
    with pytest.raises(ConfigError, match="needs at least one reward"):
        check({"stage": "grpo"})
    with pytest.raises(ConfigError, match="section `grpo` applies to stage 'grpo'"):
        check({"stage": "sft", "grpo": {"beta": 0.1}})
    with pytest.raises(ConfigError, match="`loss_type` applies to algorithm grpo"):
        check(grpo_raw(algorithm="rloo", loss_type="dr_grpo"))
    with pytest.raises(ConfigError, match=r"grpo\.loss_type"):
        check(grpo_raw(loss_type="ppo"))
    with pytest.raises(ConfigError, match="stage grpo does not evaluate while training"):
        check({**grpo_raw(), "data": {"val_size": 0.1}})


def test_group_size_must_divide_the_batch_at_load() -> None:
    with pytest.raises(
        ConfigError, match=r"num_generations=3 does not divide .* 4 × 1 = 4 .* use num_generations in 2, 4"
    ):
        check({**grpo_raw(num_generations=3), "train": {"batch_size": 4}})
    with pytest.raises(ConfigError, match=r"num_generations=8 does not divide .* 2 × 3 = 6"):
        check({**grpo_raw(num_generations=8), "train": {"batch_size": 2, "grad_accum": 3}})
    check({**grpo_raw(num_generations=6), "train": {"batch_size": 2, "grad_accum": 3}})  # 6 answers to 1 prompt
    with pytest.raises(ConfigError, match=r"grpo\.num_generations"):
        check({**grpo_raw(num_generations=1)})


def test_methods_that_need_a_reference_copy_are_refused_only_with_beta() -> None:
    with pytest.raises(ConfigError, match=r"method 'adalora' cannot train stage 'grpo'.*grpo\.beta=0"):
        check({**grpo_raw(beta=0.04), "method": "adalora"})
    with pytest.raises(ConfigError, match="method 'mpt' cannot train stage 'grpo'"):
        check({**grpo_raw(beta=0.04), "method": "mpt"})
    check({**grpo_raw(), "method": "adalora"})  # beta 0: no reference copy
