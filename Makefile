# Two set-up commands: `make translate` and `make test`. Both install first.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
SHARED_DATA := ../shared/data
SHARED_MULTI30K := $(SHARED_DATA)/multi30k
GENERAL := $(addprefix general/,news wiki europarl web chat dictionary-sentences dictionary-phrases sts)
# The CPU build of torch; on machines whose pip would pick a CUDA build, use e.g.
#   make install TORCH="torch --index-url https://download.pytorch.org/whl/cpu"
TORCH ?= torch==2.13.0
# translate 3.8.1 (a LibreTranslate client the tests drive) pins libretranslatepy 2.1.1: its own environment.
CLIENTS := $(VENV)/clients
TRANSLATE_CLIENT := translate==3.8.1

.PHONY: install data translate test test-fast lint serve bench bench-memory bench-serve bench-pipeline clean

install: $(VENV)/.installed

$(VENV)/.installed: pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet $(TORCH)
	$(BIN)/python -m pip install --quiet -e ".[dev]"
	touch $@

# Multi30k under data/multi30k: linked from ../shared when it exists, else fetched through `datasets`.
# Tatoeba (data/tatoeba/deu-eng, fra-eng), WMT newstest (data/news) and the general de-en corpora
# (data/general/news, wiki, europarl, web, chat, dictionary-sentences, dictionary-phrases, sts) are linked from ../shared.
data: install
	@if [ -d $(SHARED_MULTI30K) ]; then \
		mkdir -p data/multi30k && ln -sf $(abspath $(SHARED_MULTI30K))/*.gz data/multi30k/ && \
		echo "linked Multi30k from $(SHARED_MULTI30K) into data/multi30k"; \
	else \
		$(BIN)/mt prepare-data --dataset bentrevett/multi30k --output data/multi30k; \
	fi
	@for corpus in tatoeba/deu-eng tatoeba/fra-eng news $(GENERAL); do \
		if [ -d $(SHARED_DATA)/$$corpus ]; then \
			mkdir -p data/$$corpus && ln -sf $(abspath $(SHARED_DATA))/$$corpus/*.gz data/$$corpus/ && \
			echo "linked $$corpus from $(SHARED_DATA)/$$corpus into data/$$corpus"; \
		else \
			echo "$(SHARED_DATA)/$$corpus not found: data/$$corpus is not available"; \
		fi; \
	done

translate: install
	$(BIN)/mt translate

test: install $(CLIENTS)/.$(TRANSLATE_CLIENT)
	$(BIN)/python -m pytest

$(CLIENTS)/.$(TRANSLATE_CLIENT):
	test -x $(CLIENTS)/bin/python || $(PYTHON) -m venv $(CLIENTS)
	$(CLIENTS)/bin/python -m pip install --quiet "$(TRANSLATE_CLIENT)"
	touch $@

# The tests without the slow tier (real processes, wheels, benchmarks, the 200-step model): about a minute on 2 cores.
test-fast: install
	$(BIN)/python -m pytest -m "not slow"

# ruff: lint and check formatting (`ruff format` and `ruff check --fix` repair most of it).
lint: install
	$(BIN)/ruff check mt tests bench
	$(BIN)/ruff format --check mt tests bench

# The translation server (LibreTranslate-compatible API and a page at /) on http://127.0.0.1:5000.
serve: install
	$(BIN)/mt serve

# Speed, memory and quality on this machine (about 11 minutes on 2 cores); see docs/benchmarks.md.
bench: data
	$(BIN)/python bench/benchmark.py

# Peak memory of train-tokenizer and train on synthetic corpora of 100k and 1M pairs (about 2 minutes).
bench-memory: install
	$(BIN)/python bench/corpus_memory.py

# mt serve under 1, 8 and 32 concurrent clients, with and without batching; runs/bench/serve_load.json.
bench-serve: data
	$(BIN)/python bench/serve_load.py

# mt translate in pipelines: streaming vs whole-input throughput, peak memory of 2-200 MB pipes.
bench-pipeline: data
	$(BIN)/python bench/pipeline.py

clean:
	rm -rf $(VENV) .pytest_cache .hypothesis
