"""The verbs: each loads its config and calls one workflow (the parser in `parser.py` maps names to them)."""

from __future__ import annotations

import argparse
import json
import re
import sys
from pathlib import Path

from tuneforge.cli.common import is_override, load_config, prepare_sections, run_overrides, verb_config
from tuneforge.config import ConfigError, RunConfig
from tuneforge.errors import TuneforgeError


def cmd_train(args: argparse.Namespace) -> int:
    cfg = load_config(args.config, run_overrides(args))  # config errors once, here, before any process starts
    if cfg.privacy.enabled and ((args.nproc or 1) > 1 or (args.nnodes or 1) > 1):
        raise ConfigError("privacy (DP-SGD) trains in one process: drop --nproc / --nnodes")
    if args.nproc is not None or args.nnodes is not None:
        return _launch(args, cfg.name, _worker_argv(args))
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
        if result.privacy is not None:
            from tuneforge.stages.skeleton import privacy_line

            print(privacy_line(result.privacy))
    return 0


def _launch(args: argparse.Namespace, run_id: str, worker_argv: list[str]) -> int:
    """`worker_argv` in --nproc processes on this machine (of --nnodes), through torchrun (docs/scale.md)."""
    from tuneforge.distributed.launch import LaunchPlan, launch

    plan = LaunchPlan(
        nproc=1 if args.nproc is None else args.nproc,
        nnodes=args.nnodes or 1,
        node_rank=args.node_rank,
        master=args.master,
        run_id=run_id,
    )
    return launch(plan, worker_argv)


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
    cfg = load_config(args.config, extra)  # config errors once, here, before any process starts
    if args.nproc is not None or args.nnodes is not None:
        argv = ["-v"] if args.verbose else []
        argv += ["eval", args.config, *args.overrides, *[f"--run={r}" for r in args.run or ()]]
        return _launch(args, f"{cfg.name}-eval", argv + ([f"--output={args.output}"] if args.output else []))
    from tuneforge.distributed.env import world_from_env
    from tuneforge.eval import evaluate
    from tuneforge.eval.report import markdown

    report = evaluate(cfg, runs=args.run or ())
    if world_from_env().is_main:  # one report per job, not per process
        print(markdown(report), end="")
    return 0


def cmd_validate(args: argparse.Namespace) -> int:
    from tuneforge.stages.continuation import resolve_start

    cfg = resolve_start(load_config(args.config, args.overrides))  # model.adapter: as the run would record it
    print(cfg.to_yaml(), end="")
    return 0


def cmd_quickstart(args: argparse.Namespace) -> int:
    from tuneforge import quickstart

    cfg = load_config(quickstart.QUICKSTART_CONFIG, run_overrides(args))
    if not cfg.output.overwrite and cfg.run_dir.exists():
        # A repeated quickstart keeps the earlier run: it takes the next free name instead.
        n = 2
        while (cfg.run_dir.parent / f"{cfg.name}-{n}").exists():
            n += 1
        cfg = load_config(quickstart.QUICKSTART_CONFIG, [*run_overrides(args), f"name={cfg.name}-{n}"])
    quickstart.run(cfg)
    return 0


def cmd_chat(args: argparse.Namespace) -> int:
    from tuneforge.chat import chat_main

    return chat_main(args)


def cmd_doctor(args: argparse.Namespace) -> int:
    from tuneforge.doctor import report

    print(report())
    return 0


def cmd_bench(args: argparse.Namespace) -> int:
    from tuneforge.config import BENCH_METHODS_PRESETS, BENCH_SPEED_PRESETS

    presets = BENCH_SPEED_PRESETS if args.what == "speed" else BENCH_METHODS_PRESETS
    cfg = verb_config("bench", None, args.overrides, args, presets)
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


def cmd_audit(args: argparse.Namespace) -> int:
    from tuneforge.audit.report import markdown
    from tuneforge.audit.run import AUDITS, AuditRequest, run_audit

    if args.trust:
        return _audit_trust(args)
    request = AuditRequest(
        run=Path(args.run) if args.run else None,
        base=Path(args.base) if args.base else None,
        checks=tuple(c for c in AUDITS if getattr(args, c, False)),  # one flag per check, named as in AUDITS
        n=args.n or None,
        candidates=args.candidates,
        heldout=args.heldout,
        out=Path(args.out) if args.out else None,
        overwrite=args.overwrite,
        batch_size=args.batch_size,
        bootstrap=args.bootstrap,
        seed=args.seed,
    )
    report, out = run_audit(request)
    print(markdown(report), end="")
    print(f"written to {out}")
    return 0


def _audit_trust(args: argparse.Namespace) -> int:
    from tuneforge.audit.trust import DEFAULT_VARIANTS, trust_check
    from tuneforge.eval.report import markdown

    variants = [v.strip() for v in args.variants.split(",") if v.strip()] if args.variants else DEFAULT_VARIANTS
    report = trust_check(
        load_config(args.trust, []), run=args.run, variants=variants, output_dir=args.out, overwrite=args.overwrite
    )
    print(markdown(report), end="")
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

    if args.action == "preview":
        return data_preview(args)
    if args.action == "scrub":
        return data_scrub(args)
    if args.action == "select":
        return data_select(args)
    if args.action == "poetry":
        from tuneforge.cli.poetry_verb import data_poetry

        return data_poetry(args)

    flags = [f"prepare.{k}={json.dumps(v)}" for k, v in (("out", args.out), ("name", args.name)) if v]
    words = [*args.sources, *flags]  # --out and --name: short for prepare.out and prepare.name
    config = prepare_sections(args.config) if args.config else None
    cfg = verb_config("prepare", config, [w for w in words if is_override(w)], args, {})
    sources = [w for w in words if not is_override(w)]
    if not sources or not cfg.prepare.out:
        raise DataError(
            "tuneforge data prepare needs documents (a git repository for prepare.recipes=code_review) and an "
            "output folder: DOCS... --out DIR --name NAME"
        )
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


def data_preview(args: argparse.Namespace) -> int:
    """`tuneforge data preview CONFIG [key=value ...] [--n N]`: rendered samples, trained spans marked."""
    from tuneforge.data.preview import preview
    from tuneforge.data.schema import DataError
    from tuneforge.models.loader import load_tokenizer

    paths = [w for w in args.sources if not is_override(w)]
    if len(paths) + bool(args.config) != 1:
        raise DataError("tuneforge data preview needs one CONFIG: tuneforge data preview CONFIG.yaml [key=value ...]")
    cfg = load_config(args.config or paths[0], [w for w in args.sources if is_override(w)])
    from tuneforge.stages import STAGES

    kind = STAGES[cfg.stage].data
    n = 3 if args.n is None else args.n
    print(preview(cfg, n, load_tokenizer(cfg.model), color=sys.stdout.isatty(), data_kind=kind), end="")
    return 0


def data_select(args: argparse.Namespace) -> int:
    """`tuneforge data select --private D --public D [--public D ...] --n N --epsilon E --out DIR`."""
    from tuneforge.privacy.selection import SelectionError, SelectSettings, select_public, selection_markdown

    usage = "tuneforge data select --private D --public D [--public D ...] --n N --epsilon E --out DIR"
    missing = [f"--{k}" for k in ("private", "public", "n", "epsilon", "out") if getattr(args, k) in (None, [])]
    if args.sources:
        raise SelectionError(f"data select takes no positional arguments, got {' '.join(args.sources)}: {usage}")
    if missing:
        raise SelectionError(f"data select needs {', '.join(missing)}: {usage}")
    settings = SelectSettings(
        n=args.n,
        epsilon=args.epsilon,
        delta=args.delta,
        clusters=args.clusters,
        seed=args.seed,
        within=args.within,
        accountant=args.accountant,
        user_column=args.user_column,
        name=args.name or "selected",
    )
    summary = select_public(
        args.private, args.public, args.out, settings, dataset_dir=args.dataset_dir, overwrite=args.overwrite
    )
    print(selection_markdown(summary), end="")
    names = [k for k, d in summary["datasets"].items() if d["rows"]]
    print(
        f"written to {args.out} (selection.json, selection.png); train on it: data.dataset_dir={args.out}, "
        f"data.datasets: {', '.join(f'{{name: {n}}}' for n in names)}"
    )
    return 0


def data_scrub(args: argparse.Namespace) -> int:
    """`tuneforge data scrub INPUT... --out DIR [--overwrite] [--types T,..] [--ner spacy|presidio]`."""
    from tuneforge.data.pii import DEFAULT_PHONE_REGIONS
    from tuneforge.data.schema import DataError
    from tuneforge.data.scrub import META_DIR, ScrubSettings, parse_types, report_table, scrub_files

    if not args.sources or not args.out:
        raise DataError(
            "tuneforge data scrub needs inputs and an output folder: tuneforge data scrub INPUT... --out DIR"
        )
    regions = args.phone_regions.split(",") if args.phone_regions else DEFAULT_PHONE_REGIONS
    settings = ScrubSettings(
        types=parse_types(args.types) if args.types else None,
        ner=args.ner,
        ner_model=args.ner_model,
        phone_regions=tuple(r.strip() for r in regions if r.strip()),
    )
    report = scrub_files(args.sources, args.out, settings, overwrite=args.overwrite)
    print(report_table(report), end="")
    print(f"written to {args.out}; mapping (the originals: keep it private) in {Path(args.out) / META_DIR}")
    return 0


def cmd_lab(args: argparse.Namespace) -> int:
    from tuneforge.config import LAB_PRESETS
    from tuneforge.rag.lab import run_lab

    cfg = verb_config("lab", None, args.overrides, args, LAB_PRESETS)
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


def cmd_plan(args: argparse.Namespace) -> int:
    from tuneforge.config import ConfigError
    from tuneforge.plan.run import flag_overrides, plan_main

    paths = [w for w in args.words if not is_override(w)]
    if len(paths) > 1:
        raise ConfigError(f"one CONFIG file at most, got {', '.join(paths)} (overrides look like key.path=value)")
    overrides = [*flag_overrides(args), *(w for w in args.words if is_override(w))]
    return plan_main(load_config(paths[0] if paths else None, overrides), args)
