"""`tuneforge chat`: talk to a base model or a trained run in the terminal, or answer one prompt for scripts."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from tuneforge.config import ModelConfig
from tuneforge.data.schema import Message
from tuneforge.inference import GenerationParams, LocalEngine
from tuneforge.runs import RunDir, model_config_of_run

HELP = "commands: /reset clears the history, /exit (or Ctrl-D) quits"


def open_engine(args: argparse.Namespace) -> LocalEngine:
    if args.run:
        model_cfg, output = model_config_of_run(Path(args.run))
        engine = LocalEngine(model_cfg, output)
        engine.tool_format = RunDir(Path(args.run)).tool_format()  # prompts show tools as the run trained
        return engine
    adapter = Path(args.adapter) if args.adapter else None
    return LocalEngine(ModelConfig(path=args.model), adapter)


def chat_main(args: argparse.Namespace) -> int:
    params = GenerationParams(
        max_new_tokens=args.max_new_tokens, temperature=args.temperature, top_p=args.top_p, seed=args.seed
    )
    engine = open_engine(args)
    history: list[Message] = [Message("system", args.system)] if args.system else []
    if args.prompt is not None:
        prompt = sys.stdin.read() if args.prompt == "-" else args.prompt
        print(engine.generate([*history, Message("user", prompt)], params))
        return 0
    print(f"chatting with {engine.name}; {HELP}")
    while True:
        try:
            text = input("you> ").strip()
        except EOFError:
            print()
            return 0
        if text in ("/exit", "/quit"):
            return 0
        if text == "/reset":
            history = history[:1] if args.system else []
            print("(history cleared)")
            continue
        if not text:
            continue
        history.append(Message("user", text))
        print("bot> ", end="", flush=True)
        pieces = []
        for piece in engine.stream(history, params):
            pieces.append(piece)
            print(piece, end="", flush=True)
        print()
        history.append(Message("assistant", "".join(pieces).strip()))
