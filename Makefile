# Two commands do all set-up on a fresh machine with Python 3.11:
#   make reproduce   run every notebook (full profile), rewriting outputs and figures/
#   make test        pytest + nbval over the notebooks (quick profile)
# Both install the locked stack (requirements.lock) into .venv. Other targets:
#   make test-fast     the unit tests without the slow ones (under a minute)
#   make test-latest   the fast unit tests on the newest releases pyproject.toml allows (.venv-latest)
#   make lock          recompile requirements.lock (a deliberate step: see requirements.in)
#
# torch: without an NVIDIA GPU (no nvidia-smi), torch is the CPU build: pip is pointed at
# PyTorch's CPU index as well as the configured ones, and a CPU wheel (x.y.z+cpu) found on any of
# them outranks PyPI's CUDA build of the same release. With a GPU, PyPI's CUDA build is taken.
# Override: `make test TORCH_INDEX=https://download.pytorch.org/whl/cu128` (or TORCH_INDEX= for
# plain PyPI).

PYTHON      ?= $(shell command -v python3.11 || command -v python3)
VENV        ?= .venv
LATEST      ?= .venv-latest
BIN         := $(VENV)/bin
STAMP       := $(VENV)/.specnb-installed
LOCK        := requirements.lock
NODEPS      := requirements-nodeps.txt
HAS_GPU     := $(shell command -v nvidia-smi > /dev/null 2>&1 && nvidia-smi -L > /dev/null 2>&1 && echo yes)
TORCH_INDEX ?= $(if $(HAS_GPU),,https://download.pytorch.org/whl/cpu)
# pip: an unreachable extra index costs one quick failure per package looked up there, not retries
PIP_TORCH    = --retries 0 $(if $(TORCH_INDEX),--extra-index-url $(TORCH_INDEX))
LOCKED_TORCH = $(shell grep -m1 '^torch==' $(LOCK))

.PHONY: venv test test-unit test-fast test-notebooks test-latest reproduce lock clean

venv: $(STAMP)

$(STAMP): $(LOCK) $(NODEPS) pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet $(PIP_TORCH) "$(LOCKED_TORCH)"
	$(BIN)/python -m pip install --quiet --no-deps -r $(LOCK) -r $(NODEPS)
	$(BIN)/python -m pip install --quiet --no-deps -e .
	$(BIN)/python -m specnb.stack --check --against $(LOCK) $(NODEPS)
	$(BIN)/python -m ipykernel install --prefix $(VENV) --name python3 > /dev/null
	touch $(STAMP)

test: test-unit test-notebooks

test-unit: venv
	SPECNB_PROFILE=quick $(BIN)/python -m pytest -q tests

test-fast: venv
	SPECNB_PROFILE=quick $(BIN)/python -m pytest -q -m "not slow" tests

test-notebooks: venv
	@if ls notebooks/*.ipynb > /dev/null 2>&1; then \
	  SPECNB_PROFILE=quick $(BIN)/python -m pytest -q -p no:cacheprovider --nbval-lax \
	    --nbval-sanitize-with nbval_sanitize.cfg notebooks; \
	else echo "no notebooks yet"; fi

reproduce: venv
	SPECNB_PROFILE=full $(BIN)/python -m specnb.notebooks run notebooks

# The newest releases pyproject.toml allows, in a fresh .venv-latest: every package but torch,
# which stays at the locked CPU build where there is no GPU (PyPI's newest is a multi-GB CUDA
# build); LATEST_TORCH=1 upgrades it too. Prints the versions, then runs the unit tests but the slow
# ones (those run on the locked stack in `make test`; LATEST_SLOW=1 runs them here too).
test-latest:
	rm -rf $(LATEST)
	$(PYTHON) -m venv $(LATEST)
	$(if $(LATEST_TORCH),,$(LATEST)/bin/python -m pip install --quiet $(PIP_TORCH) "$(LOCKED_TORCH)")
	$(LATEST)/bin/python -m pip install --quiet --upgrade -e ".[dev]"
	$(LATEST)/bin/python -m pip install --quiet --upgrade gguf
	$(LATEST)/bin/python -m pip install --quiet --no-deps -r $(NODEPS)
	$(LATEST)/bin/python -m specnb.stack --against $(LOCK)
	SPECNB_PROFILE=quick $(LATEST)/bin/python -m pytest -q $(if $(LATEST_SLOW),,-m "not slow") tests

# Recompile the lock for Linux x86_64, CPython 3.11. torch resolves to its CPU build (from the
# find-links pip is configured with, else PyPI's CPU index); the +cpu label is dropped, so the
# lock names the release and the install step above picks the build.
LOCK_TORCH_SOURCE ?= $(if $(PIP_FIND_LINKS),--find-links $(PIP_FIND_LINKS),--torch-backend cpu)
lock: venv
	$(BIN)/python -m pip install --quiet "uv>=0.5"
	$(BIN)/uv pip compile pyproject.toml requirements.in --extra dev --python-version 3.11 \
	  --python-platform x86_64-manylinux_2_28 $(LOCK_TORCH_SOURCE) --custom-compile-command "make lock" \
	  --quiet -o $(LOCK).tmp
	sed -E 's/^(torch==[^+ ]+)\+cpu/\1/' $(LOCK).tmp > $(LOCK) && rm $(LOCK).tmp

clean:
	rm -rf $(VENV) $(LATEST) .specnb-quick
