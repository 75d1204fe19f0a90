# Each target installs what it needs into a local virtual environment first.
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
# The real EGG (not on PyPI): EGG_SOURCE (a wheel, or pip's git+https://github.com/facebookresearch/EGG@<commit>),
# else the wheel in ../shared/wheels, else none (the built-in engine runs the game).
EGG_SOURCE ?= $(firstword $(wildcard ../shared/wheels/egg-*.whl))
# What `import egg.core` needs (and tensorboard, for --tensorboard); EGG's own requirements also pull
# torchvision, which breaks beside torch 2.13, so EGG goes in with --no-deps.
EGG_RUNTIME := scipy editdistance rich wandb tensorboard

.PHONY: install test demo clean peer

install: $(VENV)/.installed

$(VENV)/.installed: setup.py pyproject.toml Makefile
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q -e ".[test]"
	if [ -n "$(EGG_SOURCE)" ]; then \
		$(PY) -m pip install -q --no-deps "$(EGG_SOURCE)" && $(PY) -m pip install -q $(EGG_RUNTIME); \
	else echo "EGG not installed (no EGG_SOURCE, no ../shared/wheels/egg-*.whl): the built-in engine runs the game"; fi
	touch $@

test: install
	$(PY) -m pytest

clean:
	rm -rf $(VENV) build *.egg-info

# The offline demo: builds the toy world once (~4 min), finetunes, prints the paper-layout tables.
demo: install
	$(PY) -m egg.zoo.discritune.demo

# The environment the authors' code runs in for bench/speed.py --ref (bench/peer/README.md).
PEER_VENV ?= .peer-venv
peer: $(PEER_VENV)/.installed

$(PEER_VENV)/.installed: bench/peer/requirements.txt
	$(PYTHON) -m venv $(PEER_VENV)
	$(PEER_VENV)/bin/pip install -q -r bench/peer/requirements.txt
	$(PEER_VENV)/bin/pip install -q --no-deps clip-anytorch==2.6.0 openai-whisper==20250625
	touch $@
