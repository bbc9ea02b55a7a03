"""The argument parser: one sub-parser per verb; `key=value` words are the config's own key paths."""

from __future__ import annotations

import argparse
from typing import Any

from tuneforge.cli import compare_verb, forgetting_verb, verbs


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="tuneforge", description="Specialise language models to a domain, offline, on a CPU."
    )
    p.add_argument("-v", "--verbose", action="store_true", help="debug logs, library warnings included")
    sub = p.add_subparsers(dest="verb", required=True, metavar="VERB")
    for add_verb in VERBS:
        add_verb(sub)
    return p


def _train(sub: Any) -> None:
    t = sub.add_parser("train", help="train with a YAML config: tuneforge train CONFIG.yaml [key=value ...]")
    t.add_argument("config")
    t.add_argument("overrides", nargs="*", help="key.path=value overrides, e.g. train.lr=1e-4 method.r=16")
    t.add_argument("--resume", action="store_true", help="same as train.resume=true")
    t.add_argument("--overwrite", action="store_true", help="same as output.overwrite=true")
    _launch_flags(t)
    t.set_defaults(func=verbs.cmd_train)


def _launch_flags(p: Any) -> None:
    """--nproc / --nnodes / --node-rank / --master: the command again in several processes (docs/scale.md)."""
    p.add_argument("--nproc", type=int, help="processes on this machine, started through torchrun (docs/scale.md)")
    p.add_argument("--nnodes", type=int, help="machines in the job (each runs the same command)")
    p.add_argument("--node-rank", type=int, default=0, help="this machine's index, 0 … nnodes-1 (0 hosts --master)")
    p.add_argument("--master", metavar="ADDR:PORT", help="node 0's address and a free port (c10d rendezvous)")


def _eval(sub: Any) -> None:
    e = sub.add_parser("eval", help="evaluate the base model and/or runs: tuneforge eval CONFIG.yaml [key=value ...]")
    e.add_argument("config")
    e.add_argument("overrides", nargs="*", help="key.path=value overrides, e.g. eval.limit=50 eval.base=false")
    e.add_argument("--run", action="append", help="a run folder to evaluate (repeatable); adds to eval.runs")
    e.add_argument("--output", help="report folder; same as eval.output_dir")
    _launch_flags(e)  # each process answers a shard of every task; rank 0 writes the report
    e.set_defaults(func=verbs.cmd_eval)


def _validate(sub: Any) -> None:
    v = sub.add_parser("validate", help="check a config and print it with every default resolved")
    v.add_argument("config")
    v.add_argument("overrides", nargs="*")
    v.set_defaults(func=verbs.cmd_validate)


def _quickstart(sub: Any) -> None:
    q = sub.add_parser("quickstart", help="LoRA on the embedded model with shipped data; before/after report")
    q.add_argument("overrides", nargs="*", help="overrides of examples/quickstart.yaml, e.g. data.variables.name=Ada")
    q.add_argument("--overwrite", action="store_true", help="replace runs/quickstart if it exists")
    q.set_defaults(func=verbs.cmd_quickstart)


def _chat(sub: Any) -> None:
    c = sub.add_parser("chat", help="chat with a run (--run) or a model (--model [--adapter])")
    src = c.add_mutually_exclusive_group(required=True)
    src.add_argument("--run", help="a run folder, e.g. runs/quickstart")
    src.add_argument("--model", help="a model folder, or 'embedded'")
    c.add_argument("--adapter", help="adapter (or full model) folder to apply on --model")
    c.add_argument("--prompt", help="one-shot: answer this prompt and exit ('-' reads standard input)")
    c.add_argument("--system", help="system prompt")
    c.add_argument("--max-new-tokens", type=int, default=256)
    c.add_argument("--temperature", type=float, default=0.0, help="0 = greedy")
    c.add_argument("--top-p", type=float, default=1.0)
    c.add_argument("--seed", type=int, default=None)
    c.set_defaults(func=verbs.cmd_chat)


def _bench(sub: Any) -> None:
    b = sub.add_parser(
        "bench", help="benchmarks: tuneforge bench methods|speed [CONFIG] [key=value ...] (docs/bench_methods.md)"
    )
    b.add_argument("what", choices=["methods", "speed"])
    b.add_argument(
        "overrides",
        nargs="*",
        metavar="[CONFIG] key=value",
        help="a config YAML and key.path=value overrides, e.g. bench.methods=lora,dora train.max_steps=10 "
        "(right after the benchmark: argparse reads positionals before options)",
    )
    # old flags, one release: each prints the key it stands for now
    b.add_argument("--methods", help="now bench.methods")
    b.add_argument("--model", help="now model.path")
    b.add_argument("--steps", type=int, help="now train.max_steps")
    b.add_argument("--batch-size", type=int, help="now train.batch_size")
    b.add_argument("--cutoff-len", type=int, help="now data.cutoff_len")
    b.add_argument("--repeats", type=int, help="now bench.repeats")
    b.add_argument("--ablation", help="now bench.ablation")
    b.add_argument("--eval-items", type=int, help="now bench.eval_items")
    b.add_argument("--lr", type=float, help="now train.lr")
    b.add_argument("--score-items", type=int, help="now eval.limit")
    b.add_argument("--threads", type=int, help="now train.threads")
    b.add_argument("--out", help="now bench.out")
    b.set_defaults(func=verbs.cmd_bench)


def _export(sub: Any) -> None:
    x = sub.add_parser("export", help="merge a run into an HF model folder (or GGUF) and verify it")
    x.add_argument("--run", required=True, help="a run folder, e.g. runs/quickstart")
    x.add_argument("--out", help="output folder (default: RUN/merged)")
    x.add_argument("--format", choices=["hf", "gguf", "gguf-lora"], default="hf", help="gguf-lora: the adapter only")
    x.add_argument("--gguf-type", choices=["f16", "q8_0"], default="f16")
    x.add_argument("--overwrite", action="store_true", help="replace an existing output folder")
    x.set_defaults(func=verbs.cmd_export)


def _audit(sub: Any) -> None:
    a = sub.add_parser(
        "audit",
        help="leakage audits of a run: canary exposure and membership inference; --trust CONFIG: the run's "
        "quantised variants side by side on utility and trust tasks (docs/privacy.md)",
    )
    a.add_argument("run", nargs="?", help="a run folder, e.g. runs/quickstart")
    a.add_argument("--base", metavar="CONFIG", help="audit this config's base model instead, for reference")
    # the checks (AUDITS in tuneforge.audit.run); none given: every one that applies
    a.add_argument("--canaries", action="store_true", help="exposure of the data.canaries secrets")
    a.add_argument("--mia", action="store_true", help="loss-based membership inference, training vs held-out")
    a.add_argument("--n", type=int, default=500, help="mia: samples per side at most (0: all)")
    a.add_argument("--heldout", metavar="NAME_OR_PATH", help="mia: held-out samples from this dataset (name or file)")
    a.add_argument("--candidates", type=int, default=1000, help="canaries: candidate secrets scored (sampled)")
    a.add_argument("--batch-size", type=int, default=8, help="sequences per forward pass")
    a.add_argument("--bootstrap", type=int, default=1000, help="mia: bootstrap resamples of the 95%% intervals")
    a.add_argument("--seed", type=int, default=0, help="seed of the candidates, the samples and the bootstrap")
    a.add_argument(
        "--trust",
        metavar="CONFIG",
        help="trust check of quantised variants on CONFIG's eval tasks (of RUN, else CONFIG's model)",
    )
    a.add_argument("--variants", help="trust: comma-separated, default fp32,bnb8,bnb4,gguf-q8_0,gguf-q4_0")
    a.add_argument("--out", help="report folder (default: RUN/eval/audit; trust: RUN/audit/trust)")
    a.add_argument("--overwrite", action="store_true", help="replace an earlier report in that folder")
    a.set_defaults(func=verbs.cmd_audit)


def _serve(sub: Any) -> None:
    s = sub.add_parser("serve", help="OpenAI-compatible HTTP server for a run (--run) or a model (--model)")
    s_src = s.add_mutually_exclusive_group(required=True)
    s_src.add_argument("--run", help="a run folder, e.g. runs/quickstart")
    s_src.add_argument("--model", help="a model folder, or 'embedded'")
    s.add_argument("--adapter", action="append", default=[], metavar="NAME=DIR", help="extra model name (repeatable)")
    s.add_argument("--host", default="127.0.0.1", help="any non-loopback host requires --api-key")
    s.add_argument("--port", type=int, default=8000)
    s.add_argument("--api-key", help="required bearer token (default: env TUNEFORGE_API_KEY)")
    s.add_argument("--max-tokens-limit", type=int, default=1024, help="largest max_tokens a request may ask for")
    s.add_argument("--max-batch", type=int, default=16, help="concurrent requests decoded together (1: one at a time)")
    s.add_argument("--max-tools", type=int, help="a request offering more tools shows the model the k best (BM25)")
    s.set_defaults(func=verbs.cmd_serve)


def _rag(sub: Any) -> None:
    r = sub.add_parser("rag", help="retrieval: index documents, search them, answer with citations (docs/rag.md)")
    r.add_argument("action", choices=["index", "search", "chat"])
    r.add_argument(
        "words",
        nargs="*",
        metavar="QUERY | key=value",
        help="search: the query; chat: one question (else an interactive loop); then key.path=value overrides, "
        "e.g. rag.top_k=6 (right after the action: argparse reads positionals before options)",
    )
    r.add_argument("--config", help="a YAML config whose `rag:` (and `model:`) sections are used")
    r.add_argument("--docs", action="append", help="index: a file or folder to add (repeatable); rag.documents")
    r.add_argument("--index", help="index folder; rag.index_dir (default: rag_index)")
    r.add_argument("-k", type=int, help="passages retrieved; rag.top_k")
    r.add_argument("--mode", choices=["bm25", "dense", "hybrid"], help="retriever; rag.retriever")
    r_src = r.add_mutually_exclusive_group()
    r_src.add_argument("--run", help="chat: answer with a trained run, e.g. runs/quickstart")
    r_src.add_argument("--model", help="chat: a model folder or 'embedded' (default: model.path)")
    r.add_argument("--adapter", help="chat: adapter folder to apply on --model")
    r.add_argument("--json", action="store_true", help="chat: print the answer, citations and sources as JSON")
    r.set_defaults(func=verbs.cmd_rag)


def _webui(sub: Any) -> None:
    w = sub.add_parser("webui", help="web UI: config form, training, evaluation, chat and export (docs/webui.md)")
    w.add_argument("overrides", nargs="*", help="key.path=value presets of the form, e.g. model.path=DIR")
    w.add_argument("--config", help="a config YAML that fills the form")
    w.add_argument("--host", default="127.0.0.1", help="any non-loopback host requires --auth")
    w.add_argument("--port", type=int, default=7860)
    w.add_argument("--auth", help="USER:PASSWORD for the login page (default: env TUNEFORGE_WEBUI_AUTH)")
    w.set_defaults(func=verbs.cmd_webui)


def _data(sub: Any) -> None:
    dp = sub.add_parser(
        "data",
        help="data recipes: tuneforge data prepare DOCS... --out DIR --name NAME [key=value]; "
        "tuneforge data preview CONFIG [key=value] [--n N]: samples exactly as the model sees them; "
        "tuneforge data scrub INPUT... --out DIR [--ner spacy]: PII replaced by typed placeholders; "
        "tuneforge data select --private D --public D --n N --epsilon E --out DIR: DP selection of public data; "
        "tuneforge data poetry SRC... --out DIR [--n TITLES] [--seed S]: the poetry recipe's files",
    )
    dp.add_argument("action", choices=["prepare", "preview", "scrub", "select", "poetry"])
    dp.add_argument(
        "sources",
        nargs="*",
        metavar="DOCS | CONFIG | key=value",
        help="document files or folders (txt, md, jsonl, csv, pdf, code), then key.path=value overrides, e.g. "
        "prepare.recipes=chunks,qa rag.chunk_size=120 (right after the action)",
    )
    dp.add_argument("--config", help="a YAML config whose `prepare:` and `rag:` chunking keys are used")
    dp.add_argument(
        "--n",
        type=int,
        help="preview: samples shown per dataset (3); select: samples to select; poetry: held-out titles",
    )
    dp.add_argument(
        "--out",
        help="output folder (its dataset_info.json gets the new entries); prepare.out; scrub, select, poetry: new",
    )
    dp.add_argument("--name", help="dataset name (prefix): <name>_chunks, ... (prepare.name); select: <name>")
    _data_select(dp)
    dp_src = dp.add_mutually_exclusive_group()
    dp_src.add_argument("--model", help="a model folder or 'embedded': also write model-generated QA and summaries")
    dp_src.add_argument("--run", help="a trained run to generate with instead of --model")
    dp.add_argument("--adapter", help="adapter folder to apply on --model")
    # old flags, one release: each prints the key it stands for now
    dp.add_argument("--recipes", help="now prepare.recipes")
    dp.add_argument("--chunking", choices=["paragraph", "tokens"], help="now rag.chunking")
    dp.add_argument("--chunk-size", type=int, help="now rag.chunk_size")
    dp.add_argument("--chunk-overlap", type=int, help="now rag.chunk_overlap")
    dp.add_argument("--max-new-tokens", type=int, help="now prepare.max_new_tokens")
    dp.add_argument(
        "--overwrite", action="store_true", help="now prepare.overwrite=true; scrub: replace a full --out; select: DIR"
    )
    # scrub (docs/privacy.md): --out DIR and --overwrite as above, INPUT files or folders in place of DOCS
    dp.add_argument("--types", help="scrub: PII types to replace, e.g. EMAIL,PHONE (default: all)")
    dp.add_argument("--ner", choices=["spacy", "presidio"], help="scrub: NER backend for person names (pii-ner extra)")
    dp.add_argument("--ner-model", help="scrub: the spaCy pipeline the NER backend runs (default: en_core_web_sm)")
    dp.add_argument("--phone-regions", help="scrub: regions whose national phone formats are read (US,GB,DE,FR,IN)")
    dp.set_defaults(func=verbs.cmd_data)


def _data_select(dp: Any) -> None:
    """`data select` (docs/privacy.md): datasets are names, paths or `{path: ..., columns: ...}` entries."""
    dp.add_argument("--private", help="select: the private dataset whose distribution is followed")
    dp.add_argument("--public", action="append", default=[], help="select: a public dataset of the pool (repeat)")
    dp.add_argument("--epsilon", type=float, help="select: the privacy budget of the histogram; inf: no noise")
    dp.add_argument("--delta", type=float, default=1e-5, help="select: delta of (epsilon, delta)-DP (1e-5)")
    dp.add_argument("--clusters", type=int, default=20, help="select: k-means clusters of the public pool (20)")
    dp.add_argument(
        "--seed", type=int, default=0, help="select: seed of k-means and of the draw (not the noise); poetry: the draw"
    )
    dp.add_argument("--within", choices=["random", "nearest"], default="random", help="select: draw per cluster")
    dp.add_argument("--accountant", choices=["rdp", "prv"], default="rdp", help="select: calibrates the noise")
    dp.add_argument("--user-column", help="select: privacy unit = the user in this private column (not a sample)")
    dp.add_argument("--dataset-dir", help="select: a folder whose dataset_info.json names the datasets")


def _lab(sub: Any) -> None:
    lb = sub.add_parser(
        "lab", help="knowledge lab: fine-tuning vs RAG on new facts: tuneforge lab knowledge [CONFIG] [key=value ...]"
    )
    lb.add_argument("what", choices=["knowledge"])
    lb.add_argument(
        "overrides",
        nargs="*",
        metavar="[CONFIG] key=value",
        help="a config YAML and key.path=value overrides, e.g. lab.entities=10 method.r=8 train.epochs=4 "
        "(right after `knowledge`: argparse reads positionals before options)",
    )
    # old flags, one release: each prints the key it stands for now
    lb.add_argument("--out", help="now lab.out")
    lb.add_argument("--model", help="now model.path")
    lb.add_argument("--entities", type=int, help="now lab.entities")
    lb.add_argument("--paraphrases", type=int, help="now lab.paraphrases")
    lb.add_argument("--seed", type=int, help="now train.seed and eval.seed")
    lb.add_argument("--docs", help="now lab.docs")
    lb.add_argument("--questions", help="now lab.questions")
    lb.add_argument("--paraphrased", help="now lab.paraphrased")
    lb.add_argument("--retriever", choices=["bm25", "dense", "hybrid"], help="now rag.retriever")
    lb.add_argument("--top-k", type=int, help="now rag.top_k")
    lb.add_argument("--epochs", type=float, help="now train.epochs")
    lb.add_argument("--lr", type=float, help="now train.lr")
    lb.add_argument("--rank", type=int, help="now method.r (and method.alpha = 2 x rank)")
    lb.add_argument("--batch-size", type=int, help="now train.batch_size")
    lb.add_argument("--cutoff-len", type=int, help="now data.cutoff_len")
    lb.add_argument("--max-steps", type=int, help="now train.max_steps")
    lb.add_argument("--threads", type=int, help="now train.threads")
    lb.add_argument("--bootstrap", type=int, help="now eval.bootstrap")
    lb.set_defaults(func=verbs.cmd_lab)


def _sweep(sub: Any) -> None:
    sw = sub.add_parser(
        "sweep", help="grid sweep: tuneforge sweep CONFIG [key=value ...] --grid key=v1,v2 ... (docs/sweep.md)"
    )
    sw.add_argument("config", help="the run config every point starts from (its sweep: section, if any, too)")
    sw.add_argument("overrides", nargs="*", help="key.path=value overrides of that config, e.g. train.max_steps=50")
    sw.add_argument(
        "--grid",
        action="append",
        default=[],
        metavar="KEY=V1,V2",
        help="a config key and its values (repeatable; every combination is a point); sweep.grid.KEY",
    )
    sw.add_argument("--out", help="sweep folder (default: <output.dir>/sweep-<name>); sweep.out")
    sw.add_argument("--metric", help="eval_loss, train_loss, an eval task or task:metric; sweep.metric")
    sw.add_argument("--mode", choices=["min", "max"], help="whether lower or higher is better; sweep.mode")
    sw.add_argument("--backend", choices=["local", "ray"], help="local processes or Ray Tune (ASHA); sweep.backend")
    sw.add_argument("--max-concurrent", type=int, help="points trained at once; sweep.max_concurrent")
    sw.set_defaults(func=verbs.cmd_sweep)


def _compare(sub: Any) -> None:
    cp = sub.add_parser(
        "compare",
        help="every way to specialise on one task side by side (zero/few-shot, RAG, methods): tuneforge compare "
        "CONFIG [key=value ...] (docs/compare.md)",
    )
    cp.add_argument("config", help="a config with a compare: section (its arms), the task and the training data")
    cp.add_argument("overrides", nargs="*", help="key.path=value overrides, e.g. eval.limit=20 train.max_steps=30")
    cp.add_argument("--out", help="compare folder (default: <output.dir>/compare-<name>); compare.out")
    cp.set_defaults(func=compare_verb.cmd_compare)


def _forgetting(sub: Any) -> None:
    fg = sub.add_parser(
        "forgetting",
        help="the runs' base and each run on general benchmarks, before and after, next to the target task's "
        "gain: tuneforge forgetting RUN [RUN ...] (docs/eval.md)",
    )
    fg.add_argument("runs", nargs="+", metavar="RUN", help="finished run folders trained from one base model")
    fg.add_argument("--general", help="eval config of the general benchmarks (default: examples/forgetting.yaml)")
    fg.add_argument("--target", help="eval config of the target task, evaluated in the same call (default: the "
                    "gain read from the runs' own eval reports)")  # fmt: skip
    fg.add_argument("--limit", type=int, help="items per general task, a seeded sample (eval.limit of --general)")
    fg.add_argument("--output", help="report folder (default: <first run>/eval/forgetting)")
    fg.set_defaults(func=forgetting_verb.cmd_forgetting)


def _plan(sub: Any) -> None:
    pl = sub.add_parser(
        "plan", help="will it fit, and how long will it take: tuneforge plan [CONFIG] [key=value ...] (docs/plan.md)"
    )
    pl.add_argument("words", nargs="*", metavar="[CONFIG] key=value", help="a run config and key.path=value overrides")
    pl.add_argument(
        "--model", help="a preset (0.5b, 1.5b, 7b, 13b, 70b, ...), 'embedded', or a config.json / model folder"
    )
    pl.add_argument("--method", help="a method of the table, with its defaults (same as method=M)")
    pl.add_argument("--seq", type=int, help="tokens per sample (data.cutoff_len)")
    pl.add_argument("--batch", type=int, help="samples per device per step (train.batch_size)")
    pl.add_argument("--precision", help="fp32 | bf16 | fp16 | bf16-mixed | fp16-mixed (default: from model.dtype)")
    pl.add_argument("--attention", choices=["sdpa", "eager"], default="sdpa", help="attention implementation")
    pl.add_argument("--gpu", help="a GPU of the table (a100-80gb, h100, h200, l4, rtx4090, ...)")
    pl.add_argument("--gpus", type=int, help="how many of them")
    pl.add_argument("--gpu-memory", type=float, help="GiB per GPU, when the card differs from the table's")
    pl.add_argument("--cpu", action="store_true", help="this CPU (FLOP/s measured now)")
    pl.add_argument("--cores", type=int, help="a CPU with this many cores (scaled from this one)")
    pl.add_argument("--ram", type=float, help="GiB of memory of that CPU machine")
    pl.add_argument("--samples", type=int, help="training samples per epoch (default: counted from data.datasets)")
    pl.add_argument("--json", action="store_true", help="print the plan as JSON")
    pl.set_defaults(func=verbs.cmd_plan)


def _doctor(sub: Any) -> None:
    d = sub.add_parser("doctor", help="versions, threads, embedded model cache, optional extras")
    d.set_defaults(func=verbs.cmd_doctor)


# The verbs in the order `tuneforge --help` lists them: one function per verb adds its sub-parser.
VERBS = (
    _train,
    _eval,
    _validate,
    _quickstart,
    _chat,
    _bench,
    _export,
    _audit,
    _serve,
    _rag,
    _webui,
    _data,
    _lab,
    _sweep,
    _compare,
    _forgetting,
    _plan,
    _doctor,
)
