"""Issue 14's end-to-end check, for the measured study: the run trained by examples/tooluse.yaml, served, and the
official `openai` client with tools: a structured call with the right arguments, the result sent back, a final
answer. Skipped until that run exists (TUNEFORGE_TOOLUSE_RUN, default runs/tooluse)."""

from __future__ import annotations

import json
import os
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.serving import served
from tuneforge.data.recipes.tools import SCHEMAS, load_schemas, shown
from tuneforge.serve.app import create_app, load_engines

openai = pytest.importorskip("openai")
uvicorn = pytest.importorskip("uvicorn")
RUN = Path(os.environ.get("TUNEFORGE_TOOLUSE_RUN", "runs/tooluse"))
pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(not (RUN / "config.yaml").is_file(), reason=f"no trained tool-use run at {RUN}"),
]


@pytest.fixture(scope="module")
def base_url() -> Iterator[str]:
    app = create_app(load_engines(str(RUN), None, []), max_tokens_limit=256)
    with served(app, start_timeout_s=120) as url:
        yield url


def test_a_call_its_result_and_the_answer(base_url: str) -> None:
    client = openai.OpenAI(base_url=base_url, api_key="none", max_retries=0)
    tools = [
        shown(t) for t in load_schemas(SCHEMAS) if t["name"] in ("helpdesk.get_ticket_status", "inventory.check_stock")
    ]
    msgs: list[dict] = [{"role": "user", "content": "What is the status of ticket TCK-2290?"}]
    reply = client.chat.completions.create(model=RUN.resolve().name, messages=msgs, tools=tools, temperature=0)
    choice = reply.choices[0]
    assert choice.finish_reason == "tool_calls", choice.message.content
    (call,) = choice.message.tool_calls or []
    assert call.function.name == "helpdesk.get_ticket_status"
    assert json.loads(call.function.arguments) == {"ticket_id": "TCK-2290"}
    msgs += [
        {"role": "assistant", "content": None, "tool_calls": [call.model_dump()]},
        {
            "role": "tool",
            "tool_call_id": call.id,
            "content": json.dumps({"status": "resolved", "assignee": "Mia Chen"}),
        },
    ]
    final = client.chat.completions.create(model=RUN.resolve().name, messages=msgs, tools=tools, temperature=0)
    assert final.choices[0].finish_reason == "stop" and "resolved" in (final.choices[0].message.content or "")
