"""`tuneforge lab knowledge`: inject new knowledge by fine-tuning, by retrieval, or both, and measure which works.

Arms (after Ovadia et al. 2024, "Fine-Tuning or Retrieval?"):

  base                 the model as it is (on the fictional world: chance, 0.25)
  base + RAG           the top-k retrieved passages in the prompt
  ft_docs              LoRA continued pre-training (stage pt) on the plain documents
  ft_docs + RAG
  ft_paraphrase        the same on the paraphrase-augmented documents (when there are any)
  ft_paraphrase + RAG

Every arm answers the same multiple-choice questions, scored by log-likelihood of each choice through the
chat template (tuneforge.eval's multiple_choice task, acc_norm), with bootstrap 95% intervals and paired
differences to the base model (tuneforge.eval.report). Retrieval is scored on its own where gold passages
are known (recall@k, MRR, context precision/recall).

Data: the seeded fictional world of `tuneforge.rag.world`, or the user's documents and questions
(`lab.docs=DIR lab.questions=FILE.jsonl [lab.paraphrased=DIR]`; a question line is {"question", "choices",
"answer": index or choice text, optional "gold_chunks": [chunk ids]}).

Settings: a RunConfig (`tuneforge lab knowledge [CONFIG] [key=value ...]`): its `lab:` section, and the keys it
shares with training and retrieval (model, method, train, data.cutoff_len, rag, eval); see LabConfig.
"""

from __future__ import annotations

import gc
import json
import logging
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from tuneforge.config import RunConfig, TaskSpec, refuse_set
from tuneforge.data.documents import read_documents
from tuneforge.data.schema import DataError
from tuneforge.errors import TuneforgeError
from tuneforge.eval.lm import LM
from tuneforge.eval.prompts import Item
from tuneforge.eval.readers import Example
from tuneforge.eval.report import TaskResult, build_report, write_report
from tuneforge.eval.run import LoadedTask, ModelRef, run_task
from tuneforge.eval.tasks import build_task
from tuneforge.rag.index import IndexSettings, RagIndex, make_embedder
from tuneforge.rag.metrics import retrieval_metrics
from tuneforge.rag.pipeline import RAG_INSTRUCTION, passages_block
from tuneforge.rag.world import build_world

log = logging.getLogger("tuneforge.lab")

# Keys the lab sets itself: a value given for one would go unused.
LAB_OWN_KEYS = {"data.datasets": "the fine-tunes train on lab.docs or the fictional world"}


class LabExistsError(TuneforgeError, FileExistsError):
    """The lab's output folder holds an earlier lab: it is never overwritten."""


@dataclass(frozen=True)
class LabData:
    docs: Path
    paraphrased: Path | None
    questions: list[dict[str, Any]]
    source: str


def _world_data(cfg: RunConfig, folder: Path) -> LabData:
    lab, seed = cfg.lab, cfg.train.seed
    world = build_world(lab.entities, seed, lab.paraphrases)
    for sub, texts in (("docs", world.documents), ("paraphrased", world.paraphrased)):
        (folder / sub).mkdir(parents=True, exist_ok=True)  # compare's rerun writes the same seeded world again
        for name, text in texts.items():
            (folder / sub / name).write_text(text + "\n", encoding="utf-8")
    qs = [
        {
            "id": q.id,
            "question": q.question,
            "choices": list(q.choices),
            "answer": q.gold,
            "gold_chunks": list(q.gold_chunks),
        }
        for q in world.questions
    ]
    (folder / "world.json").write_text(
        json.dumps([asdict(e) for e in world.entities], indent=1, ensure_ascii=False), encoding="utf-8"
    )
    source = f"fictional world: {lab.entities} people x 4 facts, seed {seed}, {lab.paraphrases} paraphrases each"
    return LabData(folder / "docs", folder / "paraphrased" if lab.paraphrases else None, qs, source)


def read_questions(path: Path) -> list[dict[str, Any]]:
    """The user's questions file, checked line by line (errors name the line and the key)."""
    out = []
    with path.open(encoding="utf-8-sig") as f:
        for n, line in enumerate(f, start=1):
            if not line.strip():
                continue
            where = f"{path}:{n}"
            try:
                row = json.loads(line)
            except json.JSONDecodeError as e:
                raise DataError(f"{where}: not valid JSON ({e.msg})") from None
            choices = row.get("choices") if isinstance(row, dict) else None
            if not isinstance(row, dict) or not isinstance(row.get("question"), str) or not row["question"].strip():
                raise DataError(f"{where}: needs a non-empty string `question`")
            if not isinstance(choices, list) or len(choices) < 2 or not all(isinstance(c, str) for c in choices):
                raise DataError(f"{where}: `choices` must be a list of at least 2 strings, got {choices!r:.80}")
            answer = row.get("answer")
            gold = choices.index(answer) if isinstance(answer, str) and answer in choices else answer
            if not isinstance(gold, int) or isinstance(gold, bool) or not 0 <= gold < len(choices):
                raise DataError(f"{where}: `answer` {answer!r} is neither a choice index nor one of the choices")
            gold_chunks = row.get("gold_chunks", [])
            if not isinstance(gold_chunks, list):
                raise DataError(f"{where}: `gold_chunks` must be a list of chunk ids")
            out.append(
                {"id": str(row.get("id", n)), "question": row["question"], "choices": choices, "answer": gold}
                | ({"gold_chunks": gold_chunks} if gold_chunks else {})
            )
    if not out:
        raise DataError(f"{path}: no questions")
    return out


def _user_data(cfg: RunConfig) -> LabData:
    lab = cfg.lab
    if not lab.docs or not lab.questions:
        raise DataError("lab on your own data needs both lab.docs (a folder or file) and lab.questions (a JSONL file)")
    qpath = Path(lab.questions)
    if not qpath.is_file():
        raise DataError(f"lab.questions={qpath}: no such file")
    para = Path(lab.paraphrased) if lab.paraphrased else None
    return LabData(Path(lab.docs), para, read_questions(qpath), f"documents {lab.docs}, questions {lab.questions}")


def train_text(docs: Path, out: Path) -> Path:
    with out.open("w", encoding="utf-8") as f:
        for doc in read_documents(docs):
            f.write(json.dumps({"text": doc.text.strip()}, ensure_ascii=False) + "\n")
    return out


def pt_run_config(cfg: RunConfig, name: str, text_file: Path, runs: Path) -> dict[str, Any]:
    """The run of a fine-tune on the documents: continued pre-training (stage pt) with cfg's model, method and
    train sections on `text_file` (one document per line); `tuneforge compare`'s knowledge arms train it too."""
    dump = cfg.model_dump(mode="json")
    return {
        "name": name,
        "stage": "pt",
        "model": dump["model"],
        "data": {**dump["data"], "datasets": [{"path": str(text_file), "format": "text"}]},
        "method": dump["method"],
        "train": {**dump["train"], "save_steps": 0, "resume": False},
        "output": {"dir": str(runs)},
    }


def fine_tune(cfg: RunConfig, name: str, text_file: Path, runs: Path) -> Path:
    """Continued pre-training (stage pt, `pt_run_config`) on the documents; returns the run folder."""
    from tuneforge.stages import load_config, run_stage

    run_cfg = load_config(pt_run_config(cfg, name, text_file, runs))
    result = run_stage(run_cfg)
    log.info("%s: %d steps, final loss %s", name, result.steps, result.train_loss)
    return run_cfg.run_dir


def question_examples(questions: list[dict[str, Any]], passages: list[str] | None) -> list[Example]:
    return [
        Example(
            id=q["id"],
            question=q["question"],
            choices=tuple(q["choices"]),
            gold=q["answer"],
            target=q["choices"][q["answer"]],
            instruction=RAG_INSTRUCTION.format(passages=passages[i]) if passages is not None else None,
        )
        for i, q in enumerate(questions)
    ]


def question_task(name: str, examples: list[Example], path: str) -> LoadedTask:
    """The questions as tuneforge.eval's multiple_choice task (cloze: acc_norm)."""
    spec = TaskSpec(type="multiple_choice", format="csqa", path=path, name=name)
    return LoadedTask(name, build_task(spec, examples, f"lab task {name}"), [Item(e) for e in examples])


def lab_data(cfg: RunConfig, folder: Path) -> LabData:
    """The fictional world (written into `folder`), or the user's lab.docs and lab.questions; the questions are
    written to `folder`/questions.jsonl either way."""
    data = _world_data(cfg, folder) if cfg.lab.docs is None else _user_data(cfg)
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "questions.jsonl").write_text(
        "".join(json.dumps(q, ensure_ascii=False) + "\n" for q in data.questions), encoding="utf-8"
    )
    return data


def run_lab(cfg: RunConfig) -> dict[str, Any]:
    """Build data and index, fine-tune, score every arm; write lab.md / lab.json / lab.png and report/."""
    from tuneforge.inference import LocalEngine

    refuse_set(cfg, LAB_OWN_KEYS, "tuneforge lab knowledge")
    out, rag = Path(cfg.lab.out), cfg.rag
    if out.exists() and any(out.iterdir()):
        raise LabExistsError(f"{out} exists and is not empty; the lab never overwrites: choose another lab.out")
    out.mkdir(parents=True, exist_ok=True)
    data = lab_data(cfg, out / "data")
    # retrieval over the plain documents
    embedder = make_embedder(rag.embedder) if rag.retriever in ("dense", "hybrid") else None
    index = RagIndex.create(out / "index", IndexSettings(rag.chunking, rag.chunk_size, rag.chunk_overlap), embedder)
    index.add(data.docs)
    hits = [index.search(q["question"], k=rag.top_k, mode=rag.retriever) for q in data.questions]
    gold = [(q, h) for q, h in zip(data.questions, hits, strict=True) if q.get("gold_chunks")]
    retrieval = (
        retrieval_metrics([([x.chunk.id for x in h], set(q["gold_chunks"])) for q, h in gold], (1, rag.top_k))
        if gold
        else {}
    )
    tasks = [
        question_task("closed_book", question_examples(data.questions, None), str(out / "data" / "questions.jsonl")),
        question_task("rag", question_examples(data.questions, [passages_block(h) for h in hits]), str(out / "index")),
    ]
    # arms one after the other, the report rewritten after each: a long run keeps what it has measured
    base = cfg.model
    arms: list[tuple[str, Path | None]] = [("base", None), ("ft_docs", data.docs)]
    arms += [("ft_paraphrase", data.paraphrased)] if data.paraphrased else []
    models: list[ModelRef] = []
    results: list[TaskResult] = []
    summary: dict[str, Any] = {}
    for name, docs in arms:
        adapter = None
        if docs is not None:
            text = train_text(docs, out / "data" / f"{name}.jsonl")
            adapter = fine_tune(cfg, name, text, out / "runs") / "adapter"
        models.append(ModelRef(name, base, adapter))
        engine = LocalEngine(base, adapter)
        lm = LM(engine.model, engine.tokenizer, cfg.eval.batch_size, progress=False)
        for loaded in tasks:
            results.append(run_task(lm, loaded, name))
        del engine, lm
        gc.collect()
        report = write_report(build_report(cfg, [(t.name, t.task) for t in tasks], models, results), out / "report")
        summary = summarise(report.data, cfg, data, retrieval, len(index.chunks))
        (out / "lab.json").write_text(json.dumps(summary, indent=1, ensure_ascii=False) + "\n", encoding="utf-8")
        (out / "lab.md").write_text(lab_markdown(summary), encoding="utf-8")
        plot_arms(summary, out / "lab.png")
        log.info("lab: %s", "; ".join(f"{a['arm']} {a['value']:.3f}" for a in summary["arms"]))
    return summary


def lab_settings(cfg: RunConfig) -> dict[str, Any]:
    """The settings the lab's table names, each under its config key (lab.json `settings`)."""
    return {
        "model.path": cfg.model.path,
        **{f"lab.{k}": v for k, v in cfg.lab.model_dump(mode="json").items()},
        "method.name": cfg.method.name,
        "method.r": getattr(cfg.method, "r", None),
        **{f"train.{k}": getattr(cfg.train, k) for k in ("epochs", "lr", "batch_size", "max_steps", "seed")},
        "data.cutoff_len": cfg.data.cutoff_len,
        "rag.retriever": cfg.rag.retriever,
        "rag.top_k": cfg.rag.top_k,
        "eval.bootstrap": cfg.eval.bootstrap,
    }


def summarise(
    report: dict[str, Any], cfg: RunConfig, data: LabData, retrieval: dict[str, float], chunks: int
) -> dict[str, Any]:
    arms = []
    tasks = {t["name"]: t for t in report["tasks"]}
    for m in report["models"]:
        for task, suffix in (("closed_book", ""), ("rag", " + RAG")):
            t = tasks[task]
            score = t["scores"][m["label"]][t["primary"]]
            diff = next((c for c in t["comparisons"] if c["model"] == m["label"] and c["metric"] == t["primary"]), None)
            arms.append({"arm": m["label"] + suffix, "metric": t["primary"], **score, "vs_base_same_task": diff})
    chance = sum(1 / len(q["choices"]) for q in data.questions) / len(data.questions)
    return {
        "settings": lab_settings(cfg),
        "config": cfg.model_dump(mode="json"),
        "data": data.source,
        "questions": len(data.questions),
        "chunks": chunks,
        "chance": round(chance, 4),
        "retrieval": {k: round(v, 4) for k, v in retrieval.items()},
        "arms": arms,
    }


def _f(x: float | None) -> str:
    return "n/a" if x is None else f"{x:.3f}"


def lab_markdown(summary: dict[str, Any]) -> str:
    s = summary["settings"]
    method = s["method.name"] + (f" r={s['method.r']}" if s["method.r"] is not None else "")
    lines = [
        "# Knowledge lab: fine-tuning vs retrieval",
        "",
        f"Model {s['model.path']}; {summary['data']}; {summary['questions']} multiple-choice questions in wordings "
        f"no document uses (chance {summary['chance']:.3f}). RAG: top {s['rag.top_k']} of {summary['chunks']} "
        f"chunks, retriever {s['rag.retriever']}. Fine-tuning: {method}, stage pt, {s['train.epochs']} epochs, "
        f"lr {s['train.lr']}, blocks of {s['data.cutoff_len']} tokens. Score: acc_norm (log-likelihood per byte of "
        f"each choice), 95% intervals from {s['eval.bootstrap']} bootstrap resamples over questions.",
        "",
        "| arm | accuracy | 95% CI |",
        "|---|---:|---|",
    ]
    for a in summary["arms"]:
        lines.append(f"| {a['arm']} | {_f(a['value'])} | [{_f(a['ci95_low'])}, {_f(a['ci95_high'])}] |")
    if summary["retrieval"]:
        r = summary["retrieval"]
        lines += ["", "Retrieval (gold passage known): " + ", ".join(f"{k} {v:.3f}" for k, v in r.items()) + "."]
    lines += ["", "Paired differences to the base model per task: report/report.md."]
    return "\n".join(lines) + "\n"


def plot_arms(summary: dict[str, Any], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    arms = summary["arms"]
    fig, ax = plt.subplots(figsize=(7, 0.45 * len(arms) + 1.4), dpi=110)
    y = list(range(len(arms)))[::-1]
    values = [a["value"] or 0.0 for a in arms]
    low = [max(0.0, v - (a["ci95_low"] if a["ci95_low"] is not None else v)) for v, a in zip(values, arms, strict=True)]
    high = [
        max(0.0, (a["ci95_high"] if a["ci95_high"] is not None else v) - v) for v, a in zip(values, arms, strict=True)
    ]
    colours = ["tab:orange" if "RAG" in a["arm"] else "tab:blue" for a in arms]
    ax.barh(y, values, xerr=[low, high], color=colours, capsize=3)
    ax.set_yticks(y, [a["arm"] for a in arms])
    ax.axvline(summary["chance"], color="grey", linestyle="--", label=f"chance {summary['chance']:.2f}")
    ax.set_xlim(0, 1)
    ax.set_xlabel("multiple-choice accuracy (acc_norm, 95% bootstrap CI)")
    ax.set_title(f"knowledge lab: {summary['settings']['model.path']}")
    ax.legend(loc="lower right", fontsize=8)
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)


__all__ = [
    "LAB_OWN_KEYS",
    "LabData",
    "LabExistsError",
    "fine_tune",
    "lab_data",
    "lab_markdown",
    "pt_run_config",
    "question_examples",
    "question_task",
    "read_questions",
    "run_lab",
    "train_text",
]
