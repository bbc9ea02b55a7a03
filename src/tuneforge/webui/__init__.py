"""The web UI (`tuneforge webui`): a form over the config, with training, evaluation and export run by the CLI.

Gradio is an optional dependency (`pip install -e ".[webui]"`); importing this package does not import it.
"""

from __future__ import annotations

import argparse
import os
from pathlib import Path

from tuneforge.config import RunConfig
from tuneforge.errors import TuneforgeError
from tuneforge.stages import load_config

LOOPBACK = ("127.0.0.1", "localhost", "::1")


def initial_config(config: str | None, overrides: list[str]) -> RunConfig:
    """The config that fills the form: a YAML file and/or overrides; a fresh form is named webui-N."""
    if config:
        return load_config(config, overrides)
    cfg = load_config({}, overrides)
    if any(o.split("=", 1)[0].strip() == "name" for o in overrides):
        return cfg
    n = 1
    while (Path(cfg.output.dir) / f"webui-{n}").exists():
        n += 1
    return cfg.model_copy(update={"name": f"webui-{n}"})


class WebUIError(TuneforgeError, ValueError):
    """A web UI setting the user can fix (host, login, missing extra)."""


def parse_auth(host: str, auth: str | None) -> tuple[str, str] | None:
    """Loopback needs no login; any other host must have one (the page starts processes on this machine)."""
    auth = auth or os.environ.get("TUNEFORGE_WEBUI_AUTH")
    if auth is not None and ":" not in auth:
        raise WebUIError("--auth must look like USER:PASSWORD")
    if host not in LOOPBACK and not auth:
        raise WebUIError(
            f"--host {host} exposes the web UI (which starts training processes) beyond this machine; "
            "give --auth USER:PASSWORD (or TUNEFORGE_WEBUI_AUTH)"
        )
    if not auth:
        return None
    user, _, password = auth.partition(":")
    return user, password


def webui_main(args: argparse.Namespace) -> int:
    credentials = parse_auth(args.host, args.auth)
    cfg = initial_config(args.config, list(args.overrides))
    try:
        import gradio  # noqa: F401
    except ImportError:
        raise WebUIError('tuneforge webui needs gradio: pip install -e ".[webui]"') from None
    from tuneforge.webui.app import launch

    print(f"tuneforge web UI on http://{args.host}:{args.port} (Ctrl-C stops it)", flush=True)
    launch(cfg, host=args.host, port=args.port, auth=credentials)
    return 0
