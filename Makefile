# Two commands do all the set-up on a fresh machine (see README):
#   make demo   - virtual environment, install, anonymize a sample photo
#   make test   - virtual environment, install, run the tests
PY ?= python3
VENV ?= .venv
BIN := $(VENV)/bin

$(BIN)/fiva: pyproject.toml
	$(PY) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip
	$(BIN)/pip install -q torch==2.13.0
	$(BIN)/pip install -q -e ".[eval,test,web,cluster]"
	touch $@

demo: $(BIN)/fiva
	$(BIN)/python scripts/make_sample.py demo/astronaut.png
	$(BIN)/fiva anonymize demo/astronaut.png -o demo/astronaut_anonymized.png --overwrite
	@echo "compare demo/astronaut.png with demo/astronaut_anonymized.png"

test: $(BIN)/fiva
	$(BIN)/python -m pytest -q

.PHONY: demo test
