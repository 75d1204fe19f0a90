# Each target installs what it needs into a local virtual environment first.
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python

.PHONY: install test demo clean

install: $(VENV)/.installed

$(VENV)/.installed: setup.py pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q -e ".[test]"
	touch $@

test: install
	$(PY) -m pytest

clean:
	rm -rf $(VENV) build *.egg-info

# The offline demo: builds the toy world once (~4 min), finetunes, prints the paper-layout tables.
demo: install
	$(PY) -m egg.zoo.discritune.demo
