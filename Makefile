# Two set-up commands for a newcomer: `make run` and `make test`.
PYTHON ?= python3
VENV   := .venv
PY     := $(VENV)/bin/python
STAMP  := $(VENV)/.installed
# foolbox ships the 20 ImageNet photos of the embedded default; importing foolbox
# needs more than we use, so it is installed without its dependencies.
FOOLBOX := foolbox==3.3.4

.PHONY: run test install clean

$(PY):
	$(PYTHON) -m venv $(VENV)

$(STAMP): pyproject.toml | $(PY)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -e '.[empirical,dev]'
	$(PY) -m pip install --quiet --no-deps $(FOOLBOX)
	touch $(STAMP)

install: $(STAMP)

run: $(STAMP)
	$(VENV)/bin/boundcheck main --out report

test: $(STAMP)
	$(PY) -m pytest -q -n 2 tests

clean:
	rm -rf $(VENV) report
