# Two entry points for a fresh clone: `make walkthrough` and `make test`.
VENV ?= .venv
PYTHON ?= python3

$(VENV)/.installed: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(VENV)/bin/pip install --quiet --upgrade pip
	$(VENV)/bin/pip install --quiet -e '.[all,test]'
	touch $@

.PHONY: install test walkthrough benchmark
install: $(VENV)/.installed

test: $(VENV)/.installed
	$(VENV)/bin/python -m pytest

walkthrough: $(VENV)/.installed
	VENV=$(VENV) bash examples/walkthrough.sh

benchmark: $(VENV)/.installed
	$(VENV)/bin/python benchmarks/build_and_query.py --rows 100000
