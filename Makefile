# stfuse — one-command setup. Every target works from a fresh clone: it creates .venv and installs
# what it needs. torch is pinned and installed first (a CPU build is found locally on the project
# machines; on a GPU machine pip picks the matching build of the same version).
PYTHON ?= python3
VENV   ?= .venv
PY     := $(VENV)/bin/python
PIP    := $(PY) -m pip
TORCH  ?= torch==2.13.0
STFUSE_DATA ?= $(abspath ../shared/data)
export STFUSE_DATA
export MPLBACKEND = Agg

.PHONY: demo test bench docs lint clean install

$(VENV)/.created:
	$(PYTHON) -m venv $(VENV)
	$(PIP) install -q --upgrade pip
	$(PIP) install -q "$(TORCH)"
	touch $@

$(VENV)/.installed-core: pyproject.toml $(VENV)/.created
	$(PIP) install -q -e .
	touch $@

$(VENV)/.installed-%: pyproject.toml $(VENV)/.created
	$(PIP) install -q -e ".[$*]"
	touch $@

install: $(VENV)/.installed-test

demo: $(VENV)/.installed-core
	$(PY) -m stfuse.cli demo --out results/demo

test: $(VENV)/.installed-test
	$(PY) -m ruff check .
	$(PY) -m pytest -n 2 --dist loadgroup

bench: $(VENV)/.installed-bench
	$(PY) -m benchmarks.run

docs: $(VENV)/.installed-doc
	$(PY) -m sphinx -W --keep-going -b html docs docs/_build/html
	$(PY) scripts/check_links.py docs/_build/html

lint: $(VENV)/.installed-test
	$(PY) -m ruff check .

clean:
	rm -rf $(VENV) docs/_build docs/generated results
