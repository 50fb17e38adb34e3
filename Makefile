# Two commands do all the set-up on a fresh machine:
#   make run    the service on its embedded default (SQLite, filesystem broker, local MLflow)
#   make test   the test suite (the machine's PostgreSQL and Redis where they answer, else its
#               own from the dev extra's wheels; KERASYARD_TEST_SERVICES=auto|own|machine)
#   make lint   the import rules of pyproject.toml's [tool.importlinter] (lint-imports)
#   make docs   the documentation site (MkDocs), served on http://127.0.0.1:8001
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed-stamp

.PHONY: run test lint bench install docs docs-build

$(STAMP): pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	# --no-compile: Python compiles what is imported when it is first imported; compiling
	# every module of every package (TensorFlow's thousands) here took about a minute.
	$(PY) -m pip install -q --no-compile -e ".[dev]"
	touch $(STAMP)

install: $(STAMP)

# make run ARGS=-v: also one log line per HTTP request (python -m devstack.run --help: the rest).
run: $(STAMP)
	$(PY) -m devstack.run $(ARGS)

lint: $(STAMP)
	$(VENV)/bin/lint-imports

test: $(STAMP)
	./scripts/ensure-services.sh
	$(PY) -m pytest $(PYTEST_ARGS)

bench: $(STAMP)
	$(PY) -m bench.lecture_bench

# The docs site (mkdocs.yml, docs/): served with live reload, or built strictly into site/ as CI
# does (a broken link, anchor or nav entry, or a reference out of step with the code, fails).
# NO_MKDOCS_2_WARNING: Material's banner about its successor, printed on every build.
docs: $(STAMP)
	NO_MKDOCS_2_WARNING=1 $(VENV)/bin/mkdocs serve --dev-addr 127.0.0.1:8001

docs-build: $(STAMP)
	NO_MKDOCS_2_WARNING=1 $(VENV)/bin/mkdocs build --strict
