"""The tool retriever: BM25 over name, description and parameter names; called tools always kept."""

from __future__ import annotations

import pytest

from tests.conftest import SHARED_DATA
from tuneforge.data.tool_retriever import bfcl_recall, rank_tools, select_tools, tool_terms

TOOLS = [
    {"name": "get_weather", "description": "Current weather of a city", "parameters": {"properties": {"city": {}}}},
    {"name": "convertCurrency", "description": "Exchange money", "parameters": {"properties": {"amount": {}}}},
    {"type": "function", "function": {"name": "book.table", "description": "Reserve a restaurant table"}},
]


def test_terms_split_names() -> None:
    assert tool_terms("convertCurrency get_weather book.table HTML5") == [
        "convert", "currency", "get", "weather", "book", "table", "html", "5",
    ]  # fmt: skip


def test_ranking_and_selection() -> None:
    assert rank_tools(TOOLS, "how much is 20 euros in dollars? convert the amount")[0] == 1
    assert rank_tools(TOOLS, "reserve a table for two")[0] == 2
    assert select_tools(TOOLS, "weather in Oslo", 1) == [TOOLS[0]]
    assert select_tools(TOOLS, "weather in Oslo", 1, keep=["book.table"]) == [TOOLS[2]]
    assert select_tools(TOOLS, "weather in Oslo", 2, keep=["book.table"]) == [TOOLS[0], TOOLS[2]]  # given order
    assert select_tools(TOOLS, "anything", None) == TOOLS and select_tools(TOOLS, "x", 5) == TOOLS


@pytest.mark.skipif(not (SHARED_DATA / "bfcl" / "BFCL_v4_multiple.json").is_file(), reason="no BFCL data")
def test_recall_on_bfcl_multiple() -> None:
    r = bfcl_recall(SHARED_DATA / "bfcl")
    assert r["items"] == 200 and r["own"][3] == 1.0 and r["all"][10] > 0.9  # docs/tooluse.md has the table
