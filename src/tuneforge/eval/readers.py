"""Readers for the public benchmark layouts, as they are published; each turns a file into `Example`s.

READERS maps a `format` name to a reader. A reader gets the resolved file (or zip/folder) and the split
name and returns examples in file order. Users point a task at their own files in any of these layouts.

  mmlu / ceval / cmmlu  zip (read in place) or its unpacked folder: <split>/<subject>[_<split>].csv
  llm_adapters          LLM-Adapters JSON (instruction/input/output/answer): ARC, OpenBookQA, Social IQa
                        ("Answer1: ..."), PIQA ("Solution1: ..."), WinoGrande ("Option1: ..." for the blank
                        "_"), HellaSwag ("Ending1: ..."), BoolQ (true/false), math sets (numeric `answer`)
  hellaswag             HellaSwag's own JSONL (activity_label, ctx_a, ctx_b, endings, label)
  csqa                  CommonsenseQA JSONL (question, choices.label/text, answerKey)
  tsv                   SST-2 (header `sentence<TAB>label`) and AG News (no header, text<TAB>label)
  alpaca                instruction/input/output JSON or JSONL (generation sets)
  tallrec               TALLRec's yes/no recommendation JSON (instruction/input/output "Yes."/"No."), checked
  poetry                chinese-poetry JSON (author, title, paragraphs, tags): the poems of a regular form
  codereviewer          CodeReviewer's JSONL (patch/y/msg; old/new/comment), also the code_review recipe's test files
  gsm8k                 GSM8K JSONL (question, answer ending in `#### N`)
  bfcl                  BFCL JSON lines; answers from possible_answer/<same file name> beside it
  text                  .txt (one document per line) or JSON/JSONL with a `text` field
  crows_pairs           CrowS-Pairs CSV (sent_more, sent_less, stereo_antistereo, bias_type), one file or its folder
  bbq                   BBQ JSONL, one category file or the folder of them (context, question, ans0-2, label,
                        answer_info, additional_metadata.stereotyped_groups)
  refusal               JSON/JSONL of requests (`prompt`, `harmful` true/false), e.g. the shipped refusal set
"""

from __future__ import annotations

import csv
import io
import json
import re
import zipfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from tuneforge.eval.code_review_reader import read_codereviewer
from tuneforge.eval.example import LETTERS, EvalError, Example, Reader, field_of, json_lines, records
from tuneforge.eval.poetry_reader import read_poetry
from tuneforge.eval.tallrec_reader import read_tallrec
from tuneforge.eval.trust_readers import read_bbq, read_crows_pairs, read_refusal

SPLIT_FILE_TYPES = (".json", ".jsonl", ".tsv", ".csv", ".txt")


def split_file(folder: Path, split: str) -> Path:
    """The file for `split` in a folder of split files: <split>.<ext>, else <split>_*.<ext> (CSQA names)."""
    files = [p for p in sorted(folder.iterdir()) if p.suffix in SPLIT_FILE_TYPES]
    matches = (  # test.json; CSQA's dev_rand_split.jsonl; HellaSwag's hellaswag_val.jsonl
        lambda p: p.stem == split,
        lambda p: p.stem.startswith(f"{split}_"),
        lambda p: p.stem.endswith(f"_{split}"),
    )
    for match in matches:
        found = [p for p in files if match(p)]
        if found:
            return found[0]
    names = ", ".join(p.name for p in files) or "none"
    raise EvalError(f"{folder} holds no file for split {split!r} (files: {names})")


# --- MMLU / C-Eval / CMMLU ---------------------------------------------------------------------------


def _subject_csvs(path: Path, split: str) -> Iterator[tuple[str, str, str]]:
    """(subject, source, csv text) for every <split>/<subject>[_<split>].csv in a zip or folder."""

    def subject_of(name: str) -> str:
        stem = name.rsplit("/", 1)[-1][: -len(".csv")]
        return stem[: -len(f"_{split}")] if stem.endswith(f"_{split}") else stem

    if path.is_dir():
        for f in sorted(path.rglob("*.csv")):
            if f.parent.name == split:
                yield subject_of(f.name), str(f), f.read_text(encoding="utf-8-sig")
        return
    with zipfile.ZipFile(path) as z:
        for name in sorted(z.namelist()):
            parts = name.split("/")
            if name.endswith(".csv") and len(parts) >= 2 and parts[-2] == split:
                yield subject_of(name), f"{path}:{name}", z.read(name).decode("utf-8-sig")


def _exam_reader(header: bool, name: str) -> Reader:
    def read(path: Path, split: str) -> list[Example]:
        out: list[Example] = []
        for subject, source, text in _subject_csvs(path, split):
            rows = list(csv.reader(io.StringIO(text)))
            if header:
                cols = {c.strip().lower(): i for i, c in enumerate(rows[0])}
                rows = rows[1:]
                if "answer" not in cols:
                    raise EvalError(f"{source}: {name} split {split!r} has no answer column; use another split")
                q, a, ans = cols["question"], cols["a"], cols["answer"]
            else:
                q, a, ans = 0, 1, 5
            for i, row in enumerate(rows):
                gold = LETTERS.find(row[ans].strip())
                if gold < 0:
                    raise EvalError(f"{source}: row {i + 1}: answer {row[ans]!r} is not a letter A-D")
                choices = tuple(row[a : a + 4])
                out.append(Example(f"{subject}/{i}", row[q], LETTERS[gold], choices, gold, subject=subject))
        if not out:
            raise EvalError(f"{path} holds no {name} CSV files for split {split!r} (<split>/<subject>.csv)")
        return out

    return read


# --- LLM-Adapters JSON -------------------------------------------------------------------------------

# LLM-Adapters' multiple-choice instructions: a lead sentence, the question, the choices numbered with a word of
# their own ("Solution1: ... Solution2: ..."), then "Answer format: solution1/solution2"; the answer names a choice
# by that word and number ("solution2"). The word tells the layout apart (the leads differ too).
CHOICE_LAYOUTS: dict[str, str] = {
    "solution": "Please choose the correct solution to the question:",  # PIQA
    "option": "Please choose the correct answer to fill in the blank to complete the given sentence:",  # WinoGrande
    "ending": "Please choose the correct ending to complete the given sentence:",  # HellaSwag
    "answer": "Please choose the correct answer to the question:",  # ARC, OpenBookQA, Social IQa
}
# Instructions for the chat prompt of `multiple_choice` where the bare question would not say what to do.
_LAYOUT_INSTRUCTIONS = {
    "option": "Fill in the blank (_) of the sentence.",
    "ending": "Choose the ending that completes the text.",
}
_TRUE_FALSE = re.compile(
    r"^Please answer the following question with true or false, question:\s*(?P<q>.*?)\s*\n\nAnswer format:",
    re.DOTALL,
)


def numbered_choices(block: str, label: str, source: str) -> tuple[str, ...]:
    """'Label1: a Label2: b ...' -> (a, b, ...); the numbers must run 1, 2, 3 ... and no choice may be empty."""
    parts = re.split(rf"\s*\b{label}(\d+):\s*", block, flags=re.IGNORECASE)
    numbers, texts = parts[1::2], tuple(p.strip() for p in parts[2::2])
    word = label.capitalize()
    if parts[0].strip() or numbers != [str(k) for k in range(1, len(numbers) + 1)]:
        found = ", ".join(f"{word}{n}" for n in numbers) or "none"
        raise EvalError(f"{source}: the choices must be numbered {word}1, {word}2, ... in order; found {found}")
    empty = [f"{word}{k}" for k, t in enumerate(texts, start=1) if not t]
    if empty:
        raise EvalError(f"{source}: choice {', '.join(empty)} is empty")
    if len(texts) < 2:
        raise EvalError(
            f"{source}: only one choice ({word}1: {texts[0]!r:.60}); a multiple-choice item needs two or more"
        )
    return texts


def _choice_item(n: int, source: str, r: dict[str, Any], label: str) -> Example:
    text, answer = str(r["instruction"]), str(field_of(r, "answer", source)).strip()
    body = text.strip()[len(CHOICE_LAYOUTS[label]) :]
    m = re.match(rf"\s*(?P<q>.*?)\s*(?P<choices>\b{label}1:.*?)\s*Answer format:", body, re.DOTALL | re.IGNORECASE)
    if m is None:
        raise EvalError(
            f"{source}: the instruction starts like LLM-Adapters' {label} layout but does not go on with the question, "
            f"'{label.capitalize()}1: ...' choices and 'Answer format: ...'"
        )
    question, choices = m["q"], numbered_choices(m["choices"], label, source)
    named = re.fullmatch(rf"{label}(\d+)", answer.lower())
    gold = int(named[1]) - 1 if named else -1
    if not 0 <= gold < len(choices):
        allowed = "/".join(f"{label}{k}" for k in range(1, len(choices) + 1))
        raise EvalError(f"{source}: answer {answer!r} does not name one of {len(choices)} choices ({allowed})")
    if label == "option":  # WinoGrande: the options fill the blank, and what follows it is what gets scored
        if "_" not in question:
            raise EvalError(f"{source}: the WinoGrande sentence has no blank '_' for the options: {question!r:.100}")
        if not question[question.index("_") + 1 :].strip():
            raise EvalError(f"{source}: nothing follows the blank '_' of the sentence, so there is nothing to score")
    output = str(r.get("output") or "").strip() or None
    return Example(
        str(n), question, LETTERS[gold], choices, gold, _LAYOUT_INSTRUCTIONS.get(label), output,
        prompt=text.strip(), choice_label=label,
    )  # fmt: skip


def read_llm_adapters(path: Path, split: str) -> list[Example]:
    out = []
    for i, (source, r) in enumerate(records(path)):
        text, answer = str(field_of(r, "instruction", source)), str(field_of(r, "answer", source)).strip()
        label = next((k for k, lead in CHOICE_LAYOUTS.items() if text.strip().startswith(lead)), None)
        if label is not None:
            out.append(_choice_item(i, source, r, label))
        elif m := _TRUE_FALSE.match(text):
            gold = ("true", "false").index(answer.lower()) if answer.lower() in ("true", "false") else -1
            if gold < 0:
                raise EvalError(f"{source}: answer {answer!r} is neither true nor false")
            instruction = "Answer the question with true or false."
            out.append(Example(str(i), m["q"], answer.lower(), ("true", "false"), gold, instruction))
        else:
            question = "\n\n".join(p for p in (text.strip(), str(r.get("input") or "").strip()) if p)
            reference = str(r.get("output") or "").strip().removeprefix("A:").strip() or None
            out.append(Example(str(i), question, answer, reference=reference))
    return out


# --- HellaSwag JSONL ---------------------------------------------------------------------------------


def read_hellaswag(path: Path, split: str) -> list[Example]:
    """HellaSwag as published (rowanz/hellaswag JSONL, or the Hugging Face copy with string labels).

    The question is lm-evaluation-harness's query before its clean-up: "activity_label: ctx_a Ctx_b" (ctx_b
    capitalised by str.capitalize, as the harness does); the prompt is LLM-Adapters' instruction built from the
    same fields, so the generative protocol runs on this layout too.
    """
    out = []
    for i, (source, r) in enumerate(records(path)):
        endings = field_of(r, "endings", source)
        if not isinstance(endings, list) or len(endings) < 2 or not all(isinstance(e, str) for e in endings):
            raise EvalError(f"{source}: 'endings' must be a list of two or more texts, got {endings!r:.80}")
        if not all(e.strip() for e in endings):
            raise EvalError(f"{source}: ending {[e.strip() for e in endings].index('') + 1} is empty")
        label = str(r.get("label", "")).strip()
        if not label:
            raise EvalError(f"{source}: no label (HellaSwag's test split is unlabelled: evaluate the val split)")
        gold = int(label) if label.isdigit() else -1
        if not 0 <= gold < len(endings):
            raise EvalError(f"{source}: label {label!r} is not an index of the {len(endings)} endings (0-based)")
        activity = str(field_of(r, "activity_label", source)).strip()
        if "ctx_a" in r:
            ctx_a, ctx_b = str(r["ctx_a"]), str(r.get("ctx_b") or "")
            question, ctx = f"{activity}: {ctx_a} {ctx_b.capitalize()}", str(r.get("ctx") or f"{ctx_a} {ctx_b}")
        else:
            ctx = str(field_of(r, "ctx", source))
            question = f"{activity}: {ctx}"
        listed = " ".join(f"Ending{k}: {e}" for k, e in enumerate(endings, start=1))
        fmt = "/".join(f"ending{k}" for k in range(1, len(endings) + 1))
        prompt = f"{CHOICE_LAYOUTS['ending']} {activity}: {ctx.strip()}\n\n{listed}\n\nAnswer format: {fmt}"
        out.append(
            Example(
                str(r.get("ind", i)),
                question,
                LETTERS[gold],
                tuple(endings),
                gold,
                _LAYOUT_INSTRUCTIONS["ending"],
                f"the correct answer is ending{gold + 1}",
                prompt=prompt,
                choice_label="ending",
            )
        )
    return out


# --- other layouts -----------------------------------------------------------------------------------


def read_csqa(path: Path, split: str) -> list[Example]:
    out: list[Example] = []
    for source, r in records(path):
        q = field_of(r, "question", source)
        if isinstance(q, dict):  # the original CSQA nests {stem, choices} under "question"
            r = {**r, "choices": q.get("choices"), "question": q.get("stem")}
        choices = field_of(r, "choices", source)
        if isinstance(choices, list):
            choices = {"label": [c["label"] for c in choices], "text": [c["text"] for c in choices]}
        labels, texts = list(choices["label"]), list(choices["text"])
        key = str(field_of(r, "answerKey", source))
        if key not in labels:
            raise EvalError(f"{source}: answerKey {key!r} is not one of the labels {labels}")
        gold = labels.index(key)
        out.append(Example(str(r.get("id", len(out))), str(r["question"]), LETTERS[gold], tuple(texts), gold))
    return out


def read_tsv(path: Path, split: str) -> list[Example]:
    with path.open(encoding="utf-8-sig", newline="") as f:
        rows = [row for row in csv.reader(f, delimiter="\t", quoting=csv.QUOTE_NONE) if row]
    if not rows:
        raise EvalError(f"{path} is empty")
    text_col, label_col = 0, len(rows[0]) - 1
    if rows[0][-1].strip().lower() == "label":  # a header row (SST-2); AG News has none
        names = [c.strip().lower() for c in rows[0]]
        text_col = next((names.index(n) for n in ("sentence", "text") if n in names), 0)
        rows = rows[1:]
    out = []
    for i, row in enumerate(rows):
        if len(row) <= max(text_col, label_col):
            raise EvalError(f"{path}:{i + 1}: expected {label_col + 1} tab-separated fields, got {len(row)}")
        out.append(Example(str(i), row[text_col].strip(), row[label_col].strip()))
    return out


def read_alpaca(path: Path, split: str) -> list[Example]:
    out = []
    for i, (source, r) in enumerate(records(path)):
        instruction = str(field_of(r, "instruction", source)).strip()
        output = str(field_of(r, "output", source)).strip()
        target = str(r.get("answer", output)).strip()
        question = str(r.get("input") or "").strip()
        if not question:
            instruction, question = "", instruction
        out.append(Example(str(i), question, target, instruction=instruction or None, reference=output))
    return out


def gsm8k_number(answer: str) -> str:
    return answer.rsplit("####", 1)[-1].strip().replace(",", "")


def read_gsm8k(path: Path, split: str) -> list[Example]:
    out = []
    for i, (source, r) in enumerate(records(path)):
        answer = str(field_of(r, "answer", source))
        if "####" not in answer:
            raise EvalError(f"{source}: the answer does not end in '#### <number>'")
        number = gsm8k_number(answer)
        worked = re.sub(r"<<.*?>>", "", answer.rsplit("####", 1)[0]).strip()  # drop calculator annotations
        reference = f"{worked}\nThe answer is {number}."
        out.append(Example(str(i), str(field_of(r, "question", source)), number, reference=reference))
    return out


def read_bfcl(path: Path, split: str) -> list[Example]:
    answers_file = path.parent / "possible_answer" / path.name
    answers: dict[str, Any] = {}
    if answers_file.is_file():
        answers = {r["id"]: r["ground_truth"] for _, r in json_lines(answers_file)}
    out = []
    for source, r in json_lines(path):
        item_id = str(field_of(r, "id", source))
        turns = field_of(r, "question", source)
        messages = tuple({"role": m["role"], "content": m["content"]} for m in turns[0])
        if "irrelevance" in item_id:
            calls: tuple[dict[str, Any], ...] = ()  # no function fits: making no call is the right answer
        elif item_id in answers:
            calls = tuple(answers[item_id])
        else:
            raise EvalError(f"{source}: no possible answer for {item_id!r} in {answers_file}")
        user = next((m["content"] for m in reversed(messages) if m["role"] == "user"), "")
        tools = json.dumps(field_of(r, "function", source), ensure_ascii=False)
        out.append(Example(item_id, user, json.dumps(calls), messages=messages, tools=tools, calls=calls))
    return out


def read_text(path: Path, split: str) -> list[Example]:
    out: list[Example] = []
    for i, (source, r) in enumerate(records(path)):
        text = field_of(r, "text", source)
        if str(text).strip():
            out.append(Example(str(i), str(text)))
    return out


# format name -> reader; config.TaskFormat names the same keys.
READERS: dict[str, Reader] = {
    "mmlu": _exam_reader(header=False, name="MMLU"),
    "ceval": _exam_reader(header=True, name="C-Eval"),
    "cmmlu": _exam_reader(header=True, name="CMMLU"),
    "llm_adapters": read_llm_adapters,
    "hellaswag": read_hellaswag,
    "csqa": read_csqa,
    "tsv": read_tsv,
    "alpaca": read_alpaca,
    "tallrec": read_tallrec,
    "poetry": read_poetry,
    "codereviewer": read_codereviewer,
    "gsm8k": read_gsm8k,
    "bfcl": read_bfcl,
    "text": read_text,
    "crows_pairs": read_crows_pairs,
    "bbq": read_bbq,
    "refusal": read_refusal,
}
# Formats whose `path` is one archive or folder holding every split (the others take one file per split).
SPLIT_ARCHIVES = frozenset({"mmlu", "ceval", "cmmlu"})
# Formats without splits whose folder holds one file per category (BBQ), read whole.
UNSPLIT = frozenset({"crows_pairs", "bbq"})


def read_split(fmt: str, path: Path, split: str) -> list[Example]:
    """Examples of `split` from `path`: a file as is, a folder of split files, or an exam zip/folder."""
    if fmt not in SPLIT_ARCHIVES | UNSPLIT and path.is_dir():
        path = split_file(path, split)
    try:
        return READERS[fmt](path, split)
    except (KeyError, IndexError, TypeError, UnicodeDecodeError, zipfile.BadZipFile) as e:
        raise EvalError(f"{path} is not in the {fmt!r} layout ({type(e).__name__}: {e})") from None


__all__ = [
    "CHOICE_LAYOUTS",
    "LETTERS",
    "READERS",
    "UNSPLIT",
    "EvalError",
    "Example",
    "numbered_choices",
    "read_split",
    "split_file",
]
