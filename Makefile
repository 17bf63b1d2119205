# Two set-up commands for a newcomer: `make run` and `make test`.
PYTHON ?= python3
VENV   := .venv
PY     := $(VENV)/bin/python
STAMP  := $(VENV)/.installed
# foolbox ships the 20 ImageNet photos of the embedded default; importing foolbox
# needs more than we use, so it is installed without its dependencies.
FOOLBOX := foolbox==3.3.4
# LXT (AttnLRP's reference implementation) is a test-only oracle (tests/test_lxt.py); its
# declared dependencies (transformers, accelerate, bitsandbytes, open_clip) serve its
# language-model patches, not the vision path the tests use, so it is installed without them.
LXT := lxt==2.1
# torch==2.14.1 is a CUDA build: the finished .venv holds about 6.1 GB. Checked before
# a first install, so a full disk gives one line instead of pip's ENOSPC half-way through.
# Override with `make test MIN_FREE_GIB=0`.
MIN_FREE_GIB ?= 7

.PHONY: run test install clean

$(PY):
	$(PYTHON) -m venv $(VENV)

$(STAMP): pyproject.toml | $(PY)
	@free=$$(df -Pk . | awk 'NR==2 {print int($$4 / 1048576)}'); \
	if ! ls -d $(VENV)/lib/python*/site-packages/torch >/dev/null 2>&1 \
	   && [ "$$free" -lt "$(MIN_FREE_GIB)" ]; then \
	  echo "make: only $$free GiB free here; installing .venv needs about $(MIN_FREE_GIB) GiB (torch is a CUDA build)" >&2; \
	  exit 2; \
	fi
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -e '.[empirical,dev]'
	$(PY) -m pip install --quiet --no-deps $(FOOLBOX) $(LXT)
	touch $(STAMP)

install: $(STAMP)

run: $(STAMP)
	$(VENV)/bin/boundcheck main --out report

test: $(STAMP)
	$(PY) -m ruff check --select F --quiet boundcheck proofs empirical benchmarks tests
	$(PY) -m pytest -q -n 2 tests

clean:
	rm -rf $(VENV) report
