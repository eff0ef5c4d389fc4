# Two commands do all set-up on a fresh machine with Python 3.11:
#   make reproduce   run every notebook (full profile), rewriting outputs and figures/
#   make test        pytest + nbval over the notebooks (quick profile)
# TORCH sets the torch requirement: CI pins the local CPU wheel (TORCH=torch==2.13.0);
# the default lets pip choose (a CUDA build on Linux).

PYTHON ?= $(shell command -v python3.11 || command -v python3)
VENV   ?= .venv
TORCH  ?= torch
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.specnb-installed

.PHONY: venv test test-unit test-notebooks reproduce clean

venv: $(STAMP)

$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet "$(TORCH)"
	$(BIN)/python -m pip install --quiet -e ".[dev]"
	$(BIN)/python -m ipykernel install --prefix $(VENV) --name python3 > /dev/null
	touch $(STAMP)

test: test-unit test-notebooks

test-unit: venv
	SPECNB_PROFILE=quick $(BIN)/python -m pytest -q tests

test-notebooks: venv
	@if ls notebooks/*.ipynb > /dev/null 2>&1; then \
	  SPECNB_PROFILE=quick $(BIN)/python -m pytest -q -p no:cacheprovider --nbval-lax \
	    --nbval-sanitize-with nbval_sanitize.cfg notebooks; \
	else echo "no notebooks yet"; fi

reproduce: venv
	SPECNB_PROFILE=full $(BIN)/python -m specnb.notebooks run notebooks

clean:
	rm -rf $(VENV) .specnb-quick
