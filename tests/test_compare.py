"""`tuneforge compare`: bad arms refused with the key and value named, few-shot selection, the Pareto front and
the recommendation on hand-made numbers, and a 2-arm run on the tiny model (outputs, then resume)."""

from __future__ import annotations

import csv
import json
import subprocess
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest

from tests.test_sft import cfg_file, make_cfg
from tuneforge.cli import load_config, main
from tuneforge.compare import CompareError, plan_compare
from tuneforge.compare.context import build_contexts, random_shots
from tuneforge.compare.pick import (
    best_arm,
    candidates,
    overlaps,
    pareto_front,
    recommend,
    recommendation_text,
    rule_of,
)
from tuneforge.config import ARM_KINDS, ConfigError
from tuneforge.errors import TuneforgeError


def write_test(path: Path, n: int = 6) -> Path:
    rows = [
        {"instruction": f"What is {i} plus {i}?", "input": "", "output": f"{i} plus {i} is {2 * i}."}
        for i in range(100, 100 + n)
    ]
    path.write_text(json.dumps(rows), encoding="utf-8")
    return path


def compare_raw(tmp_path: Path, model_dir: Path, arms: list[dict[str, Any]], **sections: Any) -> dict[str, Any]:
    task = {"name": "sums", "type": "generation", "format": "alpaca", "path": str(write_test(tmp_path / "t.json"))}
    given = {
        "eval": {"tasks": [{**task, "metrics": ["exact_match", "f1"], "max_new_tokens": 4}], "bootstrap": 50},
        "rag": {"embedder": "none", "retriever": "bm25"},
        "train": {"max_steps": 1, "batch_size": 2, "threads": 1},
        "compare": {"arms": arms, "out": str(tmp_path / "cmp")},
    }
    for key, value in sections.items():  # a section given here adds to (or replaces) the defaults above
        given[key] = {**given.get(key, {}), **value} if isinstance(value, dict) and key != "data" else value
    return make_cfg(tmp_path, model_dir, name="cmp", **given)


def cfg_of(
    tmp_path: Path, model_dir: Path, arms: list[dict[str, Any]], overrides: list[str] = (), task: Any = None, **kw: Any
) -> Any:
    """The comparison's config; `task` updates eval.tasks[0] (an override path cannot index a list)."""
    raw = compare_raw(tmp_path, model_dir, arms, **kw)
    if task is not None:
        raw["eval"]["tasks"] = [{**raw["eval"]["tasks"][0], **task}] if task else []
    return load_config(cfg_file(tmp_path, raw), list(overrides))


# --- bad arms: each error names the key and the value ----------------------------------------------------------


def test_unknown_arm_kind_is_refused_with_a_suggestion(tmp_path: Path, tiny_model_dir: Path) -> None:
    with pytest.raises(ConfigError) as e:
        cfg_of(tmp_path, tiny_model_dir, [{"kind": "zero_shoot"}])
    assert "compare.arms.0.kind = 'zero_shoot': unknown arm kind 'zero_shoot' (did you mean 'zero_shot'?)" in str(
        e.value
    )
    assert all(k in str(e.value) for k in ARM_KINDS)


@pytest.mark.parametrize(
    ("arm", "message"),
    [
        ({"kind": "tuned"}, "kind 'tuned' trains a run: name its method"),
        ({"kind": "rag", "k": 2}, "k does not apply to an arm of kind 'rag'"),
        ({"kind": "zero_shot", "method": "lora"}, "method does not apply to an arm of kind 'zero_shot'"),
        ({"kind": "few_shot", "kk": 2}, "unknown key 'compare.arms.0.kk' (did you mean 'k'?)"),
    ],
)
def test_settings_that_do_not_fit_the_kind_are_refused(
    tmp_path: Path, tiny_model_dir: Path, arm: dict[str, Any], message: str
) -> None:
    with pytest.raises(ConfigError, match=None) as e:
        cfg_of(tmp_path, tiny_model_dir, [arm])
    assert message in str(e.value)


def test_two_arms_of_one_name_are_refused(tmp_path: Path, tiny_model_dir: Path) -> None:
    with pytest.raises(ConfigError, match="two arms are named 'zero_shot'"):
        cfg_of(tmp_path, tiny_model_dir, [{"kind": "zero_shot"}, {"kind": "zero_shot"}])


def test_every_bad_arm_is_named_before_anything_runs(tmp_path: Path, tiny_model_dir: Path) -> None:
    arms = [
        {"kind": "zero_shot"},
        {"kind": "few_shot", "k": 99, "select": "random"},  # the training split holds 24
        {"kind": "tuned", "method": "lorra"},
        {"kind": "rag"},  # no rag.documents
        {"kind": "tuned", "method": "lora", "overrides": {"method.r": 0}},
    ]
    cfg = cfg_of(tmp_path, tiny_model_dir, arms)
    with pytest.raises(CompareError) as e:
        plan_compare(cfg)
    text = str(e.value)
    assert text.startswith("4 of 5 arms cannot run")
    assert (
        "compare.arms[1] (few_shot_random_k99): k=99 is larger than the training split (24 samples of "
        "data.datasets)" in text
    )
    assert "compare.arms[2] (lorra): method 'lorra' is not in the method table (did you mean 'lora'?)" in text
    assert "compare.arms[3] (rag): a RAG arm needs documents to retrieve from: set rag.documents" in text
    assert "compare.arms[4] (lora): method.r = 0: Input should be greater than 0" in text
    assert not (tmp_path / "cmp" / "runs").exists()  # nothing ran


def test_the_task_must_be_one_held_out_task_without_its_own_shots(tmp_path: Path, tiny_model_dir: Path) -> None:
    cfg = cfg_of(tmp_path, tiny_model_dir, [{"kind": "zero_shot"}], task={})
    with pytest.raises(CompareError, match=r"compare scores one held-out task, but eval\.tasks has 0"):
        plan_compare(cfg)
    cfg = cfg_of(tmp_path, tiny_model_dir, [{"kind": "zero_shot"}], task={"fewshot": 2})
    with pytest.raises(TuneforgeError, match=r"eval.tasks\[0\].fewshot=2: the few-shot arms put the shots"):
        plan_compare(cfg)


def test_arms_sharing_a_training_share_one_run(tmp_path: Path, tiny_model_dir: Path) -> None:
    arms = [
        {"kind": "tuned", "method": "lora"},
        {"kind": "tuned_few_shot", "method": "lora", "k": 2},
        {"kind": "tuned", "method": "prompt_tuning", "overrides": {"train.lr": 0.03}},
    ]
    plan = plan_compare(cfg_of(tmp_path, tiny_model_dir, arms))
    assert [a.label for a in plan.arms] == ["lora", "lora+few_shot_similar_k2", "prompt_tuning"]
    assert [a.run for a in plan.arms][:2] == ["lora", "lora"] and plan.arms[2].run.startswith("prompt_tuning-")
    assert [p.name for p in plan.training.points] == ["lora", plan.arms[2].run]
    lora, pt = (p.config for p in plan.training.points)
    assert lora["method"] == {"name": "lora", "r": 4, "alpha": 8}  # the config's own method section
    assert pt["method"]["name"] == "prompt_tuning" and "r" not in pt["method"] and pt["train"]["lr"] == 0.03
    assert lora["output"]["dir"] == str(tmp_path / "cmp" / "runs") and "compare" not in lora


# --- few-shot selection ------------------------------------------------------------------------------------------


def test_random_shots_are_seeded_per_item_and_distinct(tmp_path: Path, tiny_model_dir: Path) -> None:
    plan = plan_compare(cfg_of(tmp_path, tiny_model_dir, [{"kind": "few_shot", "select": "random", "k": 3}]))
    items = plan.source.task.items
    a, b = random_shots(items, 24, 3, seed=7), random_shots(items, 24, 3, seed=7)
    assert a == b and random_shots(items, 24, 3, seed=8) != a
    assert all(len(set(rows)) == 3 for rows in a) and len({tuple(r) for r in a}) > 1


def test_similar_shots_are_the_nearest_training_questions(tmp_path: Path, tiny_model_dir: Path) -> None:
    data = tmp_path / "pool.jsonl"
    words = ["apple", "banana", "cherry", "damson", "elder", "fig"]
    rows = [{"instruction": f"Spell {w} backwards please", "input": "", "output": w[::-1]} for w in words]
    data.write_text("\n".join(json.dumps(r) for r in rows) + "\n", encoding="utf-8")
    test = tmp_path / "held.json"
    test.write_text(
        json.dumps(
            [
                {"instruction": "Spell cherry backwards", "input": "", "output": "yrrehc"},
                {"instruction": "fig, spelled backwards?", "input": "", "output": "gif"},
            ]
        )
    )
    arms = [{"kind": "few_shot", "k": 2}, {"kind": "few_shot", "k": 2, "select": "random"}]
    pool = {"datasets": [{"path": str(data), "format": "alpaca"}]}
    cfg = cfg_of(tmp_path, tiny_model_dir, arms, task={"path": str(test)}, data=pool)
    plan = plan_compare(cfg)
    files = build_contexts(plan)
    similar = json.loads(files["few_shot-similar-k2"].read_text())
    firsts = [item["shots"][0]["answer"] for item in similar["items"]]
    assert firsts == ["yrrehc", "gif"]  # BM25 ranks the training question naming the same word first
    assert similar["item_ids"] == ["0", "1"] and similar["filled_at_random"] == 0
    assert similar["items"][0]["shots"][0]["question"] == "Spell cherry backwards please"
    assert len(json.loads(files["few_shot-random-k2"].read_text())["items"][1]["shots"]) == 2


# --- the Pareto front and the recommendation, on hand-made numbers ----------------------------------------------


def row(
    arm: str,
    score: float,
    ci: tuple[float | None, float | None],
    seconds: float,
    tokens: int = 50_000,
    vs_best: tuple[float | None, float | None] = (None, None),
    params: int = 0,
) -> dict[str, Any]:
    return {
        "arm": arm,
        "status": "ok",
        "score": score,
        "ci95_low": ci[0],
        "ci95_high": ci[1],
        "vs_best": None if vs_best[0] is None else 0.0,
        "vs_best_low": vs_best[0],
        "vs_best_high": vs_best[1],
        "answer_s_per_1k": seconds,
        "tokens_per_1k": tokens,
        "trainable_params": params,
    }


ROWS = [
    row("zero_shot", 0.10, (0.02, 0.20), 100.0, vs_best=(-0.85, -0.65)),
    row("few_shot", 0.55, (0.40, 0.70), 400.0, 200_000, vs_best=(-0.40, -0.20)),
    row("rag", 0.50, (0.35, 0.65), 500.0, 300_000, vs_best=(-0.45, -0.25)),  # dearer and worse than few_shot
    # lora's interval overlaps the best's, but the paired difference excludes 0: it is told apart
    row("lora", 0.80, (0.68, 0.90), 120.0, vs_best=(-0.08, -0.02), params=1000),
    row("lora+few_shot", 0.85, (0.75, 0.95), 420.0, 200_000, vs_best=(0.0, 0.0), params=1000),
    # full's paired interval holds 0; as many tokens as prompt_tuning, seconds within 10%: fewer params wins
    row("full", 0.84, (0.74, 0.94), 130.0, vs_best=(-0.05, 0.01), params=10**6),
    row("prompt_tuning", 0.83, (0.73, 0.93), 125.0, vs_best=(-0.06, 0.02), params=500),
    {"arm": "broken", "status": "failed", "score": None, "answer_s_per_1k": None},
]


def test_pareto_front_keeps_the_arms_nothing_beats_on_both() -> None:
    assert pareto_front(ROWS) == ["zero_shot", "lora", "prompt_tuning", "full", "lora+few_shot"]
    # lower is better (a loss): the front flips to the lowest scores per cost
    assert pareto_front(ROWS, higher_is_better=False) == ["zero_shot"]


def test_recommendation_is_the_cheapest_arm_the_paired_difference_cannot_tell_from_the_best() -> None:
    best = best_arm(ROWS)
    assert best is not None and best["arm"] == "lora+few_shot"
    assert overlaps(ROWS[3], best)  # the old rule's pick (cheapest overlapping) is lora
    assert rule_of(ROWS) == "paired" and [r["arm"] for r in candidates(ROWS)] == [
        "lora+few_shot",
        "full",
        "prompt_tuning",
    ]
    pick = recommend(ROWS)
    assert pick is not None and pick["arm"] == "prompt_tuning"  # 50k tokens; 125 vs 130 s a tie; 500 params
    text = recommendation_text(ROWS)
    assert text.startswith(
        "**prompt_tuning**: the cheapest of the 3 arms whose paired difference to the best arm has a 95% interval "
        "containing 0 (lora+few_shot, 0.850 [0.750, 0.950]; 200,000 tokens, 420 answer s (wall clock) per 1k "
        "answers): prompt_tuning 0.830 [0.730, 0.930], difference +0.000 [-0.060, +0.020]; 50,000 tokens"
    )
    assert "cannot be told apart" not in text and "CPU" not in text
    assert "fewest tokens per 1k answers, then answer seconds (within 10% of the fastest a tie)" in text


def test_cost_is_tokens_first_then_seconds_beyond_the_tie() -> None:
    near = [(0.0, 0.0), (-0.1, 0.1)]
    fewer_tokens = [row("a", 0.9, (0.8, 1.0), 10.0, 900, near[0]), row("b", 0.9, (0.8, 1.0), 1.0, 1000, near[1])]
    assert recommend(fewer_tokens)["arm"] == "a"  # 10x the seconds, but fewer tokens
    faster = [row("a", 0.9, (0.8, 1.0), 10.0, 900, near[0], 5), row("b", 0.9, (0.8, 1.0), 12.0, 900, near[1], 1)]
    assert recommend(faster)["arm"] == "a"  # 12 s is more than 10% over 10 s: not a tie, params do not count
    faster[1]["answer_s_per_1k"] = 10.9
    assert recommend(faster)["arm"] == "b"  # within 10%: a tie, fewer trainable parameters


def test_without_bootstrap_the_rule_is_interval_overlap_and_the_text_says_so() -> None:
    alone = [row("a", 0.9, (0.85, 0.95), 300.0), row("b", 0.2, (0.1, 0.3), 10.0)]
    assert rule_of(alone) == "overlap" and recommend(alone)["arm"] == "a"
    assert recommendation_text(alone).startswith("**a**: the best arm (0.900 [0.850, 0.950]; 50,000 tokens")
    assert "overlaps the best arm's (eval.bootstrap=0" in recommendation_text(alone)
    no_ci = [row("a", 0.5, (None, None), 10.0), row("b", 0.5, (None, None), 5.0)]  # eval.bootstrap=0: the points
    assert recommend(no_ci)["arm"] == "b"
    assert recommend([ROWS[-1]]) is None and recommendation_text([]) == "No arm finished: nothing to recommend."


# --- end to end on the tiny model --------------------------------------------------------------------------------


def in_process(cmd: list[str], **kwargs: Any) -> subprocess.CompletedProcess[bytes]:
    """`python -m tuneforge.{sweep,compare}.worker SPEC` run in this process: the workers' own entry functions
    (what their `main` runs, without its logging and offline set-up), so a test starts no interpreter."""
    from tuneforge.compare import worker as answer_worker
    from tuneforge.sweep import worker as train_worker

    module, spec_path = cmd[2], cmd[3]
    run, fail = {
        "tuneforge.sweep.worker": (train_worker.run_point, train_worker.failure),
        "tuneforge.compare.worker": (answer_worker.answer_arm, answer_worker.failure),
    }[module]
    spec = json.loads(Path(spec_path).read_text(encoding="utf-8"))
    try:
        run(spec)
    except Exception as e:  # as main: the failure is the record
        fail(spec, e)
        return subprocess.CompletedProcess(cmd, 1)
    return subprocess.CompletedProcess(cmd, 0)


def test_two_arms_end_to_end_then_resume(
    tmp_path: Path, tiny_model_dir: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """Training (sweep's worker) and answering (compare's worker) in this process: the child processes' launch
    is tested in test_the_answer_worker_process."""
    monkeypatch.setattr(subprocess, "run", in_process)  # sweep.local and compare.run launch through it
    raw = compare_raw(tmp_path, tiny_model_dir, [{"kind": "zero_shot"}, {"kind": "tuned", "method": "lora"}])
    path = cfg_file(tmp_path, raw)
    out = tmp_path / "cmp"
    assert main(["compare", str(path)]) == 0
    printed = capsys.readouterr().out
    assert "| arm | score [95% CI] |" in printed and "Recommendation: **" in printed
    for name in ("compare.md", "compare.csv", "compare.json", "compare.png"):
        assert (out / name).is_file() and (out / name).stat().st_size > 0
    summary = json.loads((out / "compare.json").read_text())
    rows = {r["arm"]: r for r in summary["rows"]}
    assert set(rows) == {"zero_shot", "lora"} and all(r["status"] == "ok" for r in rows.values())
    z, lo = rows["zero_shot"], rows["lora"]
    assert z["trainable_params"] == 0 and lo["trainable_params"] > 0 and lo["steps"] == 1
    assert z["answer_peak_rss_mb"] > 0 and lo["train_peak_rss_mb"] > 0 and z["answer_s_per_1k"] > 0
    assert z["tokens_per_1k"] > 1000 * 5  # every prompt holds the chat template and the question
    assert summary["recommended"] in rows and summary["pareto_front"]
    assert (out / "runs" / "lora" / "adapter").is_dir() and (out / "runs" / "lora" / "result.json").is_file()
    with (out / "compare.csv").open() as f:
        csv_rows = list(csv.DictReader(f))
    assert [r["arm"] for r in csv_rows] == ["zero_shot", "lora"] and csv_rows[0]["metric"] == "exact_match"
    # an arm answered by the worker before it measured CPU seconds and CUDA memory is read back as it is
    stored = json.loads((out / "answers" / "lora.json").read_text())
    assert stored.pop("answer_cpu_s") > 0 and stored.pop("cuda_peak_mb") is None
    (out / "answers" / "lora.json").write_text(json.dumps(stored))
    before = (out / "answers" / "lora.json").read_text()

    # resume: nothing trains or answers again
    def refuse(*args: Any, **kwargs: Any) -> Any:
        raise AssertionError("a finished arm ran again")

    monkeypatch.setattr("tuneforge.compare.run.run_worker", refuse)
    monkeypatch.setattr("tuneforge.compare.run.subprocess.run", refuse)
    assert main(["compare", str(path)]) == 0
    again = json.loads((out / "compare.json").read_text())
    assert [r["score"] for r in again["rows"]] == [r["score"] for r in summary["rows"]]
    assert [r["answer_cpu_s_per_1k"] is None for r in again["rows"]] == [False, True]
    assert (out / "answers" / "lora.json").read_text() == before
    # another comparison's config in the same folder is refused
    assert main(["compare", str(path), "eval.seed=1"]) == 2
    assert "holds another comparison: its config differs from this one at eval.seed" in capsys.readouterr().err


def test_an_arm_answers_with_its_shots_and_passages(tmp_path: Path, tiny_model_dir: Path) -> None:
    """compare.worker's answer_arm, in this process: each arm's prompt holds its context, and its tokens count."""
    from tuneforge.compare.plan import compare_out
    from tuneforge.compare.worker import answer_arm

    docs = tmp_path / "docs"
    docs.mkdir()
    (docs / "sums.txt").write_text("A number plus itself doubles it.\n\nThe sky is blue.\n", encoding="utf-8")
    arms = [{"kind": "zero_shot"}, {"kind": "few_shot", "k": 2, "select": "random"}, {"kind": "rag"}]
    cfg = cfg_of(tmp_path, tiny_model_dir, arms, rag={"documents": [str(docs)], "top_k": 1})
    plan = plan_compare(cfg)
    files = build_contexts(plan)
    records = {}
    for arm in plan.arms:
        spec = {
            "config": cfg.model_dump(mode="json", exclude_unset=True),
            "out": str(compare_out(cfg)),
            "arm": arm.label,
            "prompts": str(files[arm.context]) if arm.context in files else None,
            "run": None,
            "fingerprint": "f",
            "record": str(tmp_path / f"{arm.label}.json"),
        }
        records[arm.label] = answer_arm(spec)
        assert json.loads((tmp_path / f"{arm.label}.json").read_text())["status"] == "ok"
    plain, shots, rag = (records[a] for a in ("zero_shot", "few_shot_random_k2", "rag"))
    assert plain["n"] == shots["n"] == rag["n"] == 6 and len(plain["responses"]) == 6
    # two solved examples, or a passage, make every prompt longer than the question alone
    assert all(s > p for s, p in zip(shots["prompt_tokens"], plain["prompt_tokens"], strict=True))
    assert all(r > p for r, p in zip(rag["prompt_tokens"], plain["prompt_tokens"], strict=True))
    assert plain["completion_tokens"][0] >= 0 and plain["answer_s"] > 0 and plain["peak_rss_mb"] > 0
    assert plain["answer_cpu_s"] > 0 and plain["cuda_peak_mb"] is None  # the tiny model is on the CPU
    rag_prompts = json.loads(files["rag"].read_text())["items"]
    assert rag_prompts[0]["chunks"] == ["sums.txt#0"] and "doubles" in rag_prompts[0]["passages"]


def test_the_answer_worker_process(tmp_path: Path, tiny_model_dir: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """compare.run's launch of `python -m tuneforge.compare.worker`: one real child process, its record read back;
    then a failing arm (in this process) is a failed record naming the error and the path of its log."""
    from tuneforge.compare.run import _answer
    from tuneforge.sweep.folder import SweepFolder

    plan = plan_compare(cfg_of(tmp_path, tiny_model_dir, [{"kind": "zero_shot"}], ["eval.limit=2"]))
    folder = SweepFolder(plan.out)
    for sub in (folder.specs, folder.logs, plan.out / "answers"):
        sub.mkdir(parents=True, exist_ok=True)
    record = _answer(plan, folder, plan.arms[0], None)
    assert record["status"] == "ok" and record["n"] == 2 and record["answer_cpu_s"] > 0, record
    assert json.loads((plan.out / "answers" / "zero_shot.json").read_text())["status"] == "ok"
    monkeypatch.setattr(subprocess, "run", in_process)
    (plan.out / "answers" / "zero_shot.json").unlink()  # else read back: a run without result.json is no change
    failed = _answer(plan, folder, replace(plan.arms[0], run="never-trained"), None)
    assert failed["status"] == "failed" and "never-trained" in failed["error"], failed
    assert failed["error"].endswith(f"see {folder.logs / 'answer-zero_shot.log'}")
