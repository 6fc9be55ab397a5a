# Two commands for a newcomer: `make run` serves the shipped model, `make test` runs the suite.
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python

.PHONY: run test lint clean

$(VENV)/bin/python:
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip

# One stamp per set of extras, remade when pyproject.toml changes.
$(VENV)/.stamp-service: pyproject.toml | $(VENV)/bin/python
	$(PY) -m pip install -q -e '.[service]'
	touch $@

$(VENV)/.stamp-all: pyproject.toml | $(VENV)/bin/python
	$(PY) -m pip install -q -e '.[service,trainer,dev]'
	touch $@

run: $(VENV)/.stamp-service
	$(PY) -m service --config deploy/config.yaml

# pytest exits 5 when it collected no test: that must never pass as success.
test: $(VENV)/.stamp-all
	$(PY) -m ruff check .
	$(PY) -m mypy
	$(PY) -m pytest -q; rc=$$?; if [ $$rc -eq 5 ]; then echo "pytest collected no tests" >&2; exit 1; fi; exit $$rc

clean:
	rm -rf $(VENV) .pytest_cache .ruff_cache
