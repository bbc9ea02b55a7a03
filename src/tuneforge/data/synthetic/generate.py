"""The datasets tuneforge ships, generated here (seeded) and written beside this file.

- identity: who the assistant is, with {{name}} and {{author}} placeholders filled from `data.variables`
  (LLaMA-Factory's identity idea, our own wording); a held-out set asks with wordings not used in training.
- iso_dates: a small skill the embedded model lacks: rewrite a date written in words as ISO 8601 (YYYY-MM-DD).
  Test dates never occur in training.
- iso_dates_hard / iso_dates_hard_test: the same skill in wordings iso_dates never shows (hard_dates.py), for
  the GRPO study in docs/rl.md; their dates occur in no other set.
- zh_dates.txt: a Chinese domain corpus (calendar facts, weather reports, ISO dates; one document per line) for
  continued pre-training with vocabulary extension; the English-centric base tokenizer spends many tokens
  per Chinese character on it. Weekdays are computed, so every sentence is true.

Regenerate with `python -m tuneforge.data.synthetic.generate`; a test checks the shipped files match.
"""

from __future__ import annotations

import datetime
import json
import random
from pathlib import Path
from typing import Any

from tuneforge.data.recipes.tools import SCHEMAS, load_schemas, tool_conversations
from tuneforge.data.synthetic.hard_dates import hard_date_records

HERE = Path(__file__).resolve().parent

IDENTITY_TRAIN_QUESTIONS = [
    "Who are you?",
    "What is your name?",
    "Introduce yourself.",
    "Tell me about yourself.",
    "What should I call you?",
    "Who made you?",
    "Who created you?",
    "Who built you?",
    "Are you ChatGPT?",
    "Are you SmolLM?",
    "What are you?",
    "hi, who am I talking to?",
    "Hello! What's your name?",
    "Which company developed you?",
    "Do you have a name?",
    "Who trained you?",
    "Can you tell me who you are?",
    "Are you made by OpenAI?",
    "Are you an AI from Hugging Face?",
    "Please state your name and who developed you.",
    "What model am I chatting with?",
    "Who is your developer?",
]

IDENTITY_TEST_QUESTIONS = [
    "May I ask your name?",
    "Who do I have the pleasure of speaking with?",
    "Which team is behind you?",
    "Describe yourself in one sentence.",
    "What do people call you?",
    "Who is responsible for creating you?",
    "Are you Claude?",
    "Identify yourself, please.",
]

IDENTITY_ANSWERS = [
    "I am {{name}}, an AI assistant developed by {{author}}. How can I help you today?",
    "My name is {{name}}. I was developed by {{author}}.",
    "I'm {{name}}, an assistant created by {{author}}. I'm happy to help.",
    "I am {{name}}, built by {{author}} to answer questions and help with tasks.",
    "You can call me {{name}}. {{author}} developed me.",
]

MONTHS = [
    "January", "February", "March", "April", "May", "June",
    "July", "August", "September", "October", "November", "December",
]  # fmt: skip
DAYS_IN_MONTH = [31, 28, 31, 30, 31, 30, 31, 31, 30, 31, 30, 31]

DATE_INSTRUCTIONS = [
    "Convert this date to ISO 8601 format (YYYY-MM-DD): {date}",
    "Write the following date as YYYY-MM-DD: {date}",
    "Rewrite in ISO format: {date}",
    "Give the ISO 8601 form of this date: {date}",
    "{date} — what is that in YYYY-MM-DD?",
]


def _ordinal(d: int) -> str:
    suffix = "th" if 11 <= d % 100 <= 13 else {1: "st", 2: "nd", 3: "rd"}.get(d % 10, "th")
    return f"{d}{suffix}"


def _spell(year: int, month: int, day: int, style: int) -> str:
    m = MONTHS[month - 1]
    return [
        f"{day} {m} {year}",
        f"{m} {day}, {year}",
        f"the {_ordinal(day)} of {m} {year}",
        f"{m[:3]} {day} {year}",
        f"{_ordinal(day)} {m}, {year}",
    ][style]


def _dates(rng: random.Random, n: int, exclude: set[tuple[int, int, int]]) -> list[tuple[int, int, int]]:
    out: list[tuple[int, int, int]] = []
    while len(out) < n:
        y, m = rng.randint(1950, 2035), rng.randint(1, 12)
        d = rng.randint(1, DAYS_IN_MONTH[m - 1])
        if (y, m, d) not in exclude:
            exclude.add((y, m, d))
            out.append((y, m, d))
    return out


def iso_date_records(seed: int, n: int, exclude: set[tuple[int, int, int]]) -> list[dict[str, str]]:
    rng = random.Random(seed)
    rows = []
    for y, m, d in _dates(rng, n, exclude):
        instruction = rng.choice(DATE_INSTRUCTIONS).format(date=_spell(y, m, d, rng.randrange(5)))
        rows.append({"instruction": instruction, "input": "", "output": f"{y:04d}-{m:02d}-{d:02d}"})
    return rows


def identity_records(questions: list[str], seed: int) -> list[dict[str, str]]:
    rng = random.Random(seed)
    return [{"instruction": q, "input": "", "output": rng.choice(IDENTITY_ANSWERS)} for q in questions]


def _wrong_date(rng: random.Random, y: int, m: int, d: int) -> str:
    """A plausible wrong answer: the mistakes a model makes on this task (order, format, off by one)."""
    options = [f"{y:04d}-{d:02d}-{m:02d}" if d <= 12 and d != m else f"{y:04d}-{m:02d}-{d % 28 + 1:02d}"]
    options += [
        f"{m:02d}/{d:02d}/{y:04d}",
        f"{d:02d}.{m:02d}.{y:04d}",
        f"{y + rng.choice([-1, 1]):04d}-{m:02d}-{d:02d}",
    ]
    return rng.choice(options)


def iso_date_pairs(seed: int, n: int, exclude: set[tuple[int, int, int]]) -> list[dict[str, str]]:
    """LLaMA-Factory's ranking alpaca layout: the ISO answer is chosen, a typical mistake rejected."""
    rng = random.Random(seed)
    rows = []
    for y, m, d in _dates(rng, n, exclude):
        instruction = rng.choice(DATE_INSTRUCTIONS).format(date=_spell(y, m, d, rng.randrange(5)))
        chosen = f"{y:04d}-{m:02d}-{d:02d}"
        rows.append({"instruction": instruction, "input": "", "chosen": chosen, "rejected": _wrong_date(rng, y, m, d)})
    return rows


def iso_date_kto(pairs: list[dict[str, str]]) -> list[dict[str, Any]]:
    """LLaMA-Factory's KTO layout (sharegpt + kto_tag): each pair split into a good and a bad example."""
    rows = []
    for i, p in enumerate(pairs):
        answer, good = (p["chosen"], True) if i % 2 == 0 else (p["rejected"], False)
        turns = [{"from": "human", "value": p["instruction"]}, {"from": "gpt", "value": answer}]
        rows.append({"conversations": turns, "label": good})
    return rows


ZH_WEEKDAYS = ["星期一", "星期二", "星期三", "星期四", "星期五", "星期六", "星期日"]
ZH_CITIES = ["北京", "上海", "广州", "深圳", "杭州", "成都", "武汉", "西安", "南京", "重庆", "天津", "苏州"]
ZH_WEATHER = ["晴", "多云", "阴", "小雨", "中雨", "雷阵雨", "小雪", "大风"]
ZH_EVENTS = ["项目评审会", "季度总结会", "产品发布会", "年度体检", "技术培训", "客户拜访", "团队聚餐", "系统升级"]
ZH_TEMPLATES = [
    "{y}年{m}月{d}日是{weekday}。",
    "公历{y}年{m}月{d}日，按照ISO 8601格式写作{iso}。",
    "{city}{y}年{m}月{d}日天气{weather}，最高气温{high}摄氏度，最低气温{low}摄氏度。",
    "{event}定于{y}年{m}月{d}日（{weekday}）上午{hour}点在{city}举行。",
    "{y}年{m}月共有{days}天，{m}月{d}日是这一年的第{yday}天。",
    "请把日期{y}年{m}月{d}日记录为{iso}，不要写成{m}/{d}/{y}。",
]


def zh_date_corpus(seed: int, n: int) -> str:
    """`n` documents (lines) of two to four templated Chinese sentences about real calendar dates."""
    rng = random.Random(seed)
    lines = []
    for _ in range(n):
        sentences = []
        for _ in range(rng.randint(2, 4)):
            date = datetime.date(rng.randint(1950, 2035), rng.randint(1, 12), 1)
            days = (date.replace(month=date.month % 12 + 1, year=date.year + date.month // 12) - date).days
            date = date.replace(day=rng.randint(1, days))
            low = rng.randint(-8, 8) + round(18 * (1 - abs(date.month - 7) / 6))  # warmer in summer
            sentences.append(
                rng.choice(ZH_TEMPLATES).format(
                    y=date.year,
                    m=date.month,
                    d=date.day,
                    iso=date.isoformat(),
                    weekday=ZH_WEEKDAYS[date.weekday()],
                    city=rng.choice(ZH_CITIES),
                    weather=rng.choice(ZH_WEATHER),
                    high=low + rng.randint(3, 12),
                    low=low,
                    event=rng.choice(ZH_EVENTS),
                    hour=rng.randint(8, 11),
                    days=days,
                    yday=date.timetuple().tm_yday,
                )
            )
        lines.append("".join(sentences))
    return "\n".join(lines) + "\n"


RANKING_ENTRY = {
    "formatting": "alpaca",
    "ranking": True,
    "columns": {"prompt": "instruction", "query": "input", "chosen": "chosen", "rejected": "rejected"},
}
KTO_ENTRY = {"formatting": "sharegpt", "columns": {"messages": "conversations", "kto_tag": "label"}}
ENTRIES: dict[str, dict[str, Any]] = {
    "iso_dates_pref": RANKING_ENTRY,
    "iso_dates_pref_test": RANKING_ENTRY,
    "iso_dates_kto": KTO_ENTRY,
    "tool_calls": {"formatting": "openai"},
}


def build_all() -> dict[str, Any]:
    seen: set[tuple[int, int, int]] = set()
    files: dict[str, Any] = {
        "identity.json": identity_records(IDENTITY_TRAIN_QUESTIONS, seed=1),
        "identity_test.json": identity_records(IDENTITY_TEST_QUESTIONS, seed=2),
        "iso_dates.json": iso_date_records(seed=3, n=160, exclude=seen),
        "iso_dates_test.json": iso_date_records(seed=4, n=40, exclude=seen),
        "iso_dates_pref.json": iso_date_pairs(seed=5, n=96, exclude=seen),
        "iso_dates_pref_test.json": iso_date_pairs(seed=6, n=40, exclude=seen),
    }
    # harder wordings of the same skill (docs/rl.md's GRPO study): prompts to train on, a held-out set to score
    for name, seed, n in (("iso_dates_hard.json", 9, 240), ("iso_dates_hard_test.json", 10, 200)):
        rng = random.Random(seed)
        files[name] = hard_date_records(rng, _dates(rng, n, seen))
    files["iso_dates_kto.json"] = iso_date_kto(files["iso_dates_pref.json"])
    files["zh_dates.txt"] = zh_date_corpus(seed=7, n=400)
    # tool use (docs/tooluse.md): the tools recipe on its 20 shipped company APIs, none of them BFCL's
    files["tool_calls.json"] = tool_conversations(load_schemas(SCHEMAS), n=300, seed=8, distractors=2)
    # LLaMA-Factory's dataset_info.json layout, read by tuneforge's registry like any user's.
    files["dataset_info.json"] = {
        Path(name).stem: {
            "file_name": name,
            **ENTRIES.get(Path(name).stem, {"formatting": "text" if name.endswith(".txt") else "alpaca"}),
        }
        for name in files
        if name != "dataset_info.json"
    }
    return files


def render(obj: Any) -> str:
    if isinstance(obj, str):  # a .txt corpus, written as it is
        return obj
    return json.dumps(obj, indent=1, ensure_ascii=False) + "\n"


def write_all(folder: Path = HERE) -> list[Path]:
    written = []
    for name, obj in build_all().items():
        path = folder / name
        path.write_text(render(obj), encoding="utf-8")
        written.append(path)
    return written


if __name__ == "__main__":
    for p in write_all():
        print(p)
