# Two commands matter: `make up` (start it) and `make test` (set up and run the suite).
PY ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: venv test lint demo bench-step bench-quality clean

venv: $(STAMP)

# Reinstall only when a requirements file changes.
$(STAMP): requirements.txt requirements-assets.txt
	test -x $(BIN)/python || $(PY) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -r requirements.txt
	$(BIN)/pip install --quiet --no-deps -r requirements-assets.txt
	touch $(STAMP)

test: venv
	$(BIN)/ruff check .
	$(BIN)/python -m pytest -q

lint: venv
	$(BIN)/ruff check .

bench-step: venv
	$(BIN)/python bench/engine_step.py

bench-quality: venv
	$(BIN)/python bench/quality.py

clean:
	rm -rf $(VENV) runs .pytest_cache

# README command 1 for the engine: fine-tune the packaged MiniLM on Rotten Tomatoes, then distil it.
demo: venv
	$(BIN)/python -m distill run examples/finetune_teacher_rt.yaml
	$(BIN)/python -m distill run examples/kd_feature_rt.yaml
