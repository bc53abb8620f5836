# Two commands matter: `make up` (start it) and `make test` (set up and run the suite).
PY ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
CHROMIUM := /usr/bin/chromium
# Per-test limit (pytest-timeout), so a hung server fails the suite instead of stalling it.
TEST_TIMEOUT ?= 900

.PHONY: venv up test services browser lint demo bench-step bench-quality bench-live bench-lm bench-lora clean

venv: $(STAMP)

# Reinstall only when a requirements file (or pyproject.toml: the `kdweb` client command) changes.
$(STAMP): requirements.txt requirements-assets.txt pyproject.toml
	test -x $(BIN)/python || $(PY) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -r requirements.txt
	$(BIN)/pip install --quiet --no-deps -r requirements-assets.txt
	$(BIN)/pip install --quiet --no-deps -e .
	touch $(STAMP)

# README command 1: migrate, load the demo, start Redis (embedded unless REDIS_URL is set), web and one
# worker as one process tree; prints the URL and the login; Ctrl-C stops it all (kdweb/launcher.py).
up: venv
	$(BIN)/python -m kdweb.launcher

# README command 2. The suite needs PostgreSQL and Redis (DATABASE_URL, REDIS_URL; these defaults are the
# local servers) and Debian's Chromium for the browser tests. Only `test` and `services` see these values:
# `make up` keeps its zero-setup default.
test services: export DATABASE_URL ?= postgres://postgres@127.0.0.1:5432/kdweb
test services: export REDIS_URL ?= redis://127.0.0.1:6379/0

test: venv services browser
	$(BIN)/ruff check .
	@status=0; $(BIN)/python -m pytest -q --timeout=$(TEST_TIMEOUT) || status=$$?; \
	if [ $$status -eq 5 ]; then echo "error: pytest collected no tests (exit status 5)" >&2; fi; \
	exit $$status

# PostgreSQL (its server, through the maintenance database: pytest-django creates test_<name> itself)
# and Redis must answer; a missing service fails here with the address, never skips tests later.
services: venv
	@$(BIN)/python -c 'import os, psycopg; psycopg.connect(os.environ["DATABASE_URL"], dbname="postgres", connect_timeout=5).close()' \
	  || { echo "error: PostgreSQL does not answer at DATABASE_URL=$$DATABASE_URL" >&2; exit 1; }
	@$(BIN)/python -c 'import os, redis; redis.Redis.from_url(os.environ["REDIS_URL"], socket_connect_timeout=5).ping()' \
	  || { echo "error: Redis does not answer at REDIS_URL=$$REDIS_URL" >&2; exit 1; }

# Debian's Chromium for the browser tests (playwright drives it; no browser download). Installed as root
# when missing; without root it is an error in CI (CI=true) and a warning elsewhere.
browser:
	@if [ ! -x $(CHROMIUM) ] && [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null; then \
	  echo "installing Debian's chromium (apt-get)"; \
	  apt-get update && DEBIAN_FRONTEND=noninteractive apt-get install -y chromium || exit 1; \
	fi
	@if [ -x $(CHROMIUM) ]; then $(CHROMIUM) --version 2>/dev/null; \
	elif [ "$$CI" = true ]; then \
	  echo "error: no $(CHROMIUM); install Debian's chromium as root: apt-get install -y chromium" >&2; exit 1; \
	else \
	  echo "warning: no $(CHROMIUM) (install Debian's chromium as root): the browser tests cannot run" >&2; \
	fi

lint: venv
	$(BIN)/ruff check .

bench-step: venv
	$(BIN)/python bench/engine_step.py

bench-quality: venv
	$(BIN)/python bench/quality.py

# Causal-LM KD on the real SmolLM2-135M (converted from its GGUF once): the LM KD step against a
# hand-written one at batch 8 x 256, and a short distillation scored by held-out BBC perplexity.
bench-lm: venv
	$(BIN)/python bench/lm.py

# Full vs LoRA fine-tuning of MiniLM-L6 on Rotten Tomatoes: accuracy, trainable parameters, step time.
bench-lora: venv
	$(BIN)/python bench/lora.py

# The live view under load: the local PostgreSQL and Redis must answer (`services`); the bench drops and
# recreates a database of its own (kdweb_bench_live) and empties Redis db 5, never the tests' ones.
bench-live: venv services
	$(BIN)/python -m bench.live

clean:
	rm -rf $(VENV) runs .pytest_cache

# The engine alone, from the command line: fine-tune the packaged MiniLM on Rotten Tomatoes, then distil it.
demo: venv
	$(BIN)/python -m distill run examples/finetune_teacher_rt.yaml
	$(BIN)/python -m distill run examples/kd_feature_rt.yaml
