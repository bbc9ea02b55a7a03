"""The `tuneforge` command: one verb per workflow."""

from __future__ import annotations

import argparse
import json
import re
import sys
from collections.abc import Sequence
from pathlib import Path

from tuneforge.config import RunConfig
from tuneforge.errors import TuneforgeError
from tuneforge.utils.logs import offline_env, setup_logging

# Errors a user can act on: printed as one message, never as a traceback (exit 2). Anything else is a bug in
# tuneforge or a library and shows its traceback (exit 1): a `ValueError` from deep inside torch is not the user's.
USER_ERRORS: tuple[type[BaseException], ...] = (TuneforgeError,)


def load_config(path: str | Path | None, overrides: Sequence[str]) -> RunConfig:
    from tuneforge.stages import load_config as load_with_tables

    return load_with_tables(path or {}, overrides)


def _overrides(args: argparse.Namespace) -> list[str]:
    extra = list(args.overrides)
    if getattr(args, "resume", False):
        extra.append("train.resume=true")
    if getattr(args, "overwrite", False):
        extra.append("output.overwrite=true")
    return extra


def cmd_train(args: argparse.Namespace) -> int:
    cfg = load_config(args.config, _overrides(args))  # config errors once, here, before any process starts
    if args.nproc is not None or args.nnodes is not None:
        from tuneforge.distributed.launch import LaunchPlan, launch

        plan = LaunchPlan(
            nproc=1 if args.nproc is None else args.nproc,
            nnodes=args.nnodes or 1,
            node_rank=args.node_rank,
            master=args.master,
            run_id=cfg.name,
        )
        return launch(plan, _worker_argv(args))
    if cfg.distributed.backend == "ray":
        from tuneforge.distributed.ray_train import run_on_ray
        from tuneforge.runs import RunDir

        run_on_ray(cfg, ray_worker)
        run = RunDir(cfg.run_dir)
        summary = json.loads(run.result.read_text(encoding="utf-8"))  # rank 0's, in the run folder
        print(f"done on Ray: {summary['steps']} steps, final loss {summary['train_loss']}, output in {run.root}")
        return 0
    from tuneforge.distributed.env import world_from_env
    from tuneforge.stages import run_stage

    result = run_stage(cfg)
    if world_from_env().is_main:  # one line per job, not per process
        print(f"done: {result.steps} steps, final loss {result.train_loss}, output in {result.output_dir}")
    return 0


def _worker_argv(args: argparse.Namespace) -> list[str]:
    """The command each launched process runs: this one without the launch flags."""
    argv = ["-v"] if args.verbose else []
    argv += ["train", args.config, *args.overrides]
    return argv + (["--resume"] if args.resume else []) + (["--overwrite"] if args.overwrite else [])


def ray_worker(raw: dict[str, object]) -> None:
    """One Ray Train worker: the resolved config, trained by the same stage runner (Ray set up the process
    group and the launcher variables, so the run is data-parallel as under torchrun)."""
    from tuneforge.stages import load_config as load_with_tables
    from tuneforge.stages import run_stage

    run_stage(load_with_tables(raw))


def cmd_eval(args: argparse.Namespace) -> int:
    extra = [*args.overrides, *([f"eval.output_dir={args.output}"] if args.output else [])]
    cfg = load_config(args.config, extra)
    from tuneforge.eval import evaluate
    from tuneforge.eval.report import markdown

    print(markdown(evaluate(cfg, runs=args.run or ())), end="")
    return 0


def cmd_validate(args: argparse.Namespace) -> int:
    cfg = load_config(args.config, args.overrides)
    print(cfg.to_yaml(), end="")
    return 0


def cmd_quickstart(args: argparse.Namespace) -> int:
    from tuneforge import quickstart

    cfg = load_config(quickstart.QUICKSTART_CONFIG, _overrides(args))
    if not cfg.output.overwrite and cfg.run_dir.exists():
        # A repeated quickstart keeps the earlier run: it takes the next free name instead.
        n = 2
        while (cfg.run_dir.parent / f"{cfg.name}-{n}").exists():
            n += 1
        cfg = load_config(quickstart.QUICKSTART_CONFIG, [*_overrides(args), f"name={cfg.name}-{n}"])
    quickstart.run(cfg)
    return 0


def cmd_chat(args: argparse.Namespace) -> int:
    from tuneforge.chat import chat_main

    return chat_main(args)


def cmd_doctor(args: argparse.Namespace) -> int:
    from tuneforge.doctor import report

    print(report())
    return 0


def _verb_config(
    verb: str, config: str | None, words: Sequence[str], args: argparse.Namespace, presets: dict[str, object]
) -> RunConfig:
    """A workflow verb's config: CONFIG (or the defaults), the verb's presets where it leaves a key unset, then
    the old flags (each printing its keys) and the key=value words."""
    from tuneforge.config import ConfigError, old_flag_overrides, preset_overrides

    paths = [w for w in words if not _is_override(w)]
    if paths and config:
        raise ConfigError(f"give the config once: --config {config} or {paths[0]}")
    if len(paths) > 1:
        raise ConfigError(f"one CONFIG file at most, got {', '.join(paths)} (overrides look like key.path=value)")
    config = config or (paths[0] if paths else None)
    extra, notes = old_flag_overrides(verb, vars(args))
    for note in notes:
        print(note, file=sys.stderr)
    extra += [w for w in words if _is_override(w)]

    def build(items: list[str]) -> RunConfig:
        return load_config(config, items)

    cfg = build(extra)
    preset = preset_overrides(cfg, presets)
    return build([*preset, *extra]) if preset else cfg


def _is_override(word: str) -> bool:
    return re.match(r"^[A-Za-z_][\w.]*=", word) is not None


def cmd_bench(args: argparse.Namespace) -> int:
    from tuneforge.config import BENCH_METHODS_PRESETS, BENCH_SPEED_PRESETS

    presets = BENCH_SPEED_PRESETS if args.what == "speed" else BENCH_METHODS_PRESETS
    cfg = _verb_config("bench", None, args.overrides, args, presets)
    if args.what == "speed":
        from tuneforge.bench.speed import speed_main

        return speed_main(cfg)
    from tuneforge.bench.methods import BenchSettings, bench_methods

    out = Path(cfg.bench.out or "runs/bench-methods")
    rows = bench_methods(BenchSettings.from_config(cfg), out)
    print((out / "bench.md").read_text(encoding="utf-8"), end="")
    return 0 if all(r["status"] == "ok" for r in rows) else 1


def cmd_export(args: argparse.Namespace) -> int:
    from tuneforge.export.run import export_run, format_table

    out = Path(args.out) if args.out else None
    result = export_run(Path(args.run), out, fmt=args.format, gguf_type=args.gguf_type, overwrite=args.overwrite)
    print(f"exported {args.run} -> {result.out_dir}" + (f" (+ {result.gguf})" if result.gguf else ""))
    if result.modelfile:
        print(f"Ollama: ollama create NAME -f {result.modelfile}")
    print(format_table(result))
    return 0


def cmd_serve(args: argparse.Namespace) -> int:
    from tuneforge.serve.app import serve_main

    return serve_main(args)


def _rag_config(args: argparse.Namespace) -> RunConfig:
    is_override = [re.match(r"^[A-Za-z_][\w.]*=", w) is not None for w in args.words]
    args.query = " ".join(w for w, o in zip(args.words, is_override, strict=True) if not o) or None
    extra = [w for w, o in zip(args.words, is_override, strict=True) if o]
    for flag, key in (
        ("docs", "rag.documents"),
        ("index", "rag.index_dir"),
        ("k", "rag.top_k"),
        ("mode", "rag.retriever"),
    ):
        value = getattr(args, flag, None)
        if value:
            extra.append(f"{key}={json.dumps(value)}")
    return load_config(args.config, extra)


def cmd_rag(args: argparse.Namespace) -> int:
    from tuneforge.rag import pipeline
    from tuneforge.rag.index import RagIndex

    cfg = _rag_config(args)
    if args.action == "index":
        for line in pipeline.build_index(cfg.rag)[1]:
            print(line)
        return 0
    index = RagIndex.open(cfg.rag.index_dir)
    if args.action == "search":
        if not args.query:
            raise TuneforgeError("tuneforge rag search needs a query: tuneforge rag search 'who founded Varnholt?'")
        print(pipeline.format_hits(pipeline.retrieve(index, args.query, cfg.rag)))
        return 0
    from tuneforge.chat import open_engine

    if not (args.run or args.model):
        args.model = cfg.model.path
    engine = open_engine(args)
    questions = [args.query] if args.query else None
    while True:
        question = questions.pop() if questions else (None if questions is not None else _ask())
        if not question:
            return 0
        result = pipeline.answer(engine, index, question, cfg.rag)
        print(json.dumps(result.to_dict(), ensure_ascii=False) if args.json else _show_answer(result))
        if questions is not None:
            return 0


def _ask() -> str | None:
    try:
        return input("you> ").strip() or None
    except EOFError:
        return None


def _show_answer(result: object) -> str:
    from tuneforge.rag.pipeline import RagAnswer, format_hits

    assert isinstance(result, RagAnswer)
    cited = ", ".join(result.cited) or "none (the answer cites no passage number)"
    return f"{result.answer}\n\ncited: {cited}\npassages:\n{format_hits(result.hits)}"


def cmd_webui(args: argparse.Namespace) -> int:
    from tuneforge.webui import webui_main

    return webui_main(args)


def cmd_data(args: argparse.Namespace) -> int:
    from tuneforge.data.recipes import PrepareSettings, card_markdown, prepare
    from tuneforge.data.schema import DataError

    flags = [f"prepare.{k}={json.dumps(v)}" for k, v in (("out", args.out), ("name", args.name)) if v]
    words = [*args.sources, *flags]  # --out and --name: short for prepare.out and prepare.name
    cfg = _verb_config("prepare", args.config, [w for w in words if _is_override(w)], args, {})
    sources = [w for w in words if not _is_override(w)]
    if not sources or not cfg.prepare.out:
        raise DataError("tuneforge data prepare needs documents and an output folder: DOCS... --out DIR --name NAME")
    settings = PrepareSettings.from_config(cfg)
    generate = None
    if args.model or args.run:
        from tuneforge.chat import open_engine
        from tuneforge.data.schema import Message
        from tuneforge.inference import GenerationParams

        engine = open_engine(args)
        params = GenerationParams(max_new_tokens=cfg.prepare.max_new_tokens)

        def generate(prompts: list[str]) -> list[str]:
            out: list[str] = []
            for start in range(0, len(prompts), 8):
                batch = [[Message("user", p)] for p in prompts[start : start + 8]]
                out += engine.generate_batch(batch, params)
            return out

    card = prepare(sources, cfg.prepare.out, settings, generate)
    print(card_markdown(card), end="")
    print(f"written to {cfg.prepare.out} (dataset_info.json: {', '.join(card['datasets'])})")
    return 0


def cmd_lab(args: argparse.Namespace) -> int:
    from tuneforge.config import LAB_PRESETS
    from tuneforge.rag.lab import run_lab

    cfg = _verb_config("lab", None, args.overrides, args, LAB_PRESETS)
    run_lab(cfg)
    print((Path(cfg.lab.out) / "lab.md").read_text(encoding="utf-8"), end="")
    print(f"written to {cfg.lab.out} (lab.md, lab.json, lab.png, report/)")
    return 0


def cmd_sweep(args: argparse.Namespace) -> int:
    from tuneforge.sweep import SweepError, run_sweep

    extra = list(args.overrides)
    for item in args.grid:  # --grid KEY=V1,V2 is short for sweep.grid.KEY=V1,V2
        key, eq, values = item.partition("=")
        if not eq or not key.strip():
            raise SweepError(f"--grid {item!r} must look like key.path=v1,v2 (e.g. --grid method.r=4,8)")
        extra.append(f"sweep.grid.{key.strip()}={values}")
    flags = (("out", "out"), ("metric", "metric"), ("mode", "mode"), ("backend", "backend"))
    extra += [f"sweep.{key}={json.dumps(getattr(args, dest))}" for dest, key in flags if getattr(args, dest)]
    if args.max_concurrent is not None:
        extra.append(f"sweep.max_concurrent={args.max_concurrent}")
    outcome = run_sweep(load_config(args.config, extra))
    print((outcome.folder.root / "sweep.md").read_text(encoding="utf-8"), end="")
    print(f"written to {outcome.folder.root} (sweep.md, sweep.csv, sweep.json, sweep.png, runs/)")
    return 0 if outcome.ok else 1


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="tuneforge", description="Specialise language models to a domain, offline, on a CPU."
    )
    p.add_argument("-v", "--verbose", action="store_true", help="debug logs, library warnings included")
    sub = p.add_subparsers(dest="verb", required=True, metavar="VERB")

    t = sub.add_parser("train", help="train with a YAML config: tuneforge train CONFIG.yaml [key=value ...]")
    t.add_argument("config")
    t.add_argument("overrides", nargs="*", help="key.path=value overrides, e.g. train.lr=1e-4 method.r=16")
    t.add_argument("--resume", action="store_true", help="same as train.resume=true")
    t.add_argument("--overwrite", action="store_true", help="same as output.overwrite=true")
    t.add_argument("--nproc", type=int, help="processes on this machine, started through torchrun (docs/scale.md)")
    t.add_argument("--nnodes", type=int, help="machines in the job (each runs the same command)")
    t.add_argument("--node-rank", type=int, default=0, help="this machine's index, 0 … nnodes-1 (0 hosts --master)")
    t.add_argument("--master", metavar="ADDR:PORT", help="node 0's address and a free port (c10d rendezvous)")
    t.set_defaults(func=cmd_train)

    e = sub.add_parser("eval", help="evaluate the base model and/or runs: tuneforge eval CONFIG.yaml [key=value ...]")
    e.add_argument("config")
    e.add_argument("overrides", nargs="*", help="key.path=value overrides, e.g. eval.limit=50 eval.base=false")
    e.add_argument("--run", action="append", help="a run folder to evaluate (repeatable); adds to eval.runs")
    e.add_argument("--output", help="report folder; same as eval.output_dir")
    e.set_defaults(func=cmd_eval)

    v = sub.add_parser("validate", help="check a config and print it with every default resolved")
    v.add_argument("config")
    v.add_argument("overrides", nargs="*")
    v.set_defaults(func=cmd_validate)

    q = sub.add_parser("quickstart", help="LoRA on the embedded model with shipped data; before/after report")
    q.add_argument("overrides", nargs="*", help="overrides of examples/quickstart.yaml, e.g. data.variables.name=Ada")
    q.add_argument("--overwrite", action="store_true", help="replace runs/quickstart if it exists")
    q.set_defaults(func=cmd_quickstart)

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
    c.set_defaults(func=cmd_chat)

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
    b.set_defaults(func=cmd_bench)

    x = sub.add_parser("export", help="merge a run into an HF model folder (or GGUF) and verify it")
    x.add_argument("--run", required=True, help="a run folder, e.g. runs/quickstart")
    x.add_argument("--out", help="output folder (default: RUN/merged)")
    x.add_argument("--format", choices=["hf", "gguf", "gguf-lora"], default="hf", help="gguf-lora: the adapter only")
    x.add_argument("--gguf-type", choices=["f16", "q8_0"], default="f16")
    x.add_argument("--overwrite", action="store_true", help="replace an existing output folder")
    x.set_defaults(func=cmd_export)

    s = sub.add_parser("serve", help="OpenAI-compatible HTTP server for a run (--run) or a model (--model)")
    s_src = s.add_mutually_exclusive_group(required=True)
    s_src.add_argument("--run", help="a run folder, e.g. runs/quickstart")
    s_src.add_argument("--model", help="a model folder, or 'embedded'")
    s.add_argument("--adapter", action="append", default=[], metavar="NAME=DIR", help="extra model name (repeatable)")
    s.add_argument("--host", default="127.0.0.1", help="any non-loopback host requires --api-key")
    s.add_argument("--port", type=int, default=8000)
    s.add_argument("--api-key", help="required bearer token (default: env TUNEFORGE_API_KEY)")
    s.add_argument("--max-tokens-limit", type=int, default=1024, help="largest max_tokens a request may ask for")
    s.set_defaults(func=cmd_serve)

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
    r.set_defaults(func=cmd_rag)

    w = sub.add_parser("webui", help="web UI: config form, training, evaluation, chat and export (docs/webui.md)")
    w.add_argument("overrides", nargs="*", help="key.path=value presets of the form, e.g. model.path=DIR")
    w.add_argument("--config", help="a config YAML that fills the form")
    w.add_argument("--host", default="127.0.0.1", help="any non-loopback host requires --auth")
    w.add_argument("--port", type=int, default=7860)
    w.add_argument("--auth", help="USER:PASSWORD for the login page (default: env TUNEFORGE_WEBUI_AUTH)")
    w.set_defaults(func=cmd_webui)

    dp = sub.add_parser("data", help="data recipes: tuneforge data prepare DOCS... --out DIR --name NAME [key=value]")
    dp.add_argument("action", choices=["prepare"])
    dp.add_argument(
        "sources",
        nargs="+",
        metavar="DOCS | key=value",
        help="document files or folders (txt, md, jsonl, csv, pdf, code), then key.path=value overrides, e.g. "
        "prepare.recipes=chunks,qa rag.chunk_size=120 (right after the action)",
    )
    dp.add_argument("--config", help="a YAML config whose `prepare:` and `rag:` chunking keys are used")
    dp.add_argument("--out", help="output folder (its dataset_info.json gets the new entries); prepare.out")
    dp.add_argument("--name", help="dataset name prefix: <name>_chunks, <name>_qa, ...; prepare.name")
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
    dp.add_argument("--overwrite", action="store_true", help="now prepare.overwrite=true")
    dp.set_defaults(func=cmd_data)

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
    lb.set_defaults(func=cmd_lab)

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
    sw.set_defaults(func=cmd_sweep)

    d = sub.add_parser("doctor", help="versions, threads, embedded model cache, optional extras")
    d.set_defaults(func=cmd_doctor)
    return p


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    offline_env()
    setup_logging(args.verbose)
    from tuneforge.distributed.launch import record_worker_error, worker_main

    try:
        return int(worker_main(args.func)(args))
    except USER_ERRORS as e:
        record_worker_error(e)  # a worker of `--nproc N`: the launching command names this rank's error
        if args.verbose:
            raise
        print(f"error: {e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
