VENV ?= .venv
PYTHON ?= python3
DATA ?= data
PY := $(VENV)/bin/python

.PHONY: train test bench clean

# Each stamp is refreshed when its requirements file changes; pip then installs only what is missing.
$(VENV)/.runtime: requirements.txt
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -r requirements.txt
	touch $@

$(VENV)/.dev: requirements-dev.txt $(VENV)/.runtime
	$(PY) -m pip install --quiet -r requirements-dev.txt
	touch $@

## make train [DATA=folder with MNIST/raw]: train the final model (downloads MNIST into DATA if missing)
train: $(VENV)/.runtime
	$(PY) train.py --model Model_3 --data-dir $(DATA)

## make test: run the test suite (set MNIST_DIR to also run the real-data tests)
test: $(VENV)/.dev
	$(PY) -m pytest -q tests

clean:
	rm -rf $(VENV) .pytest_cache __pycache__ tests/__pycache__
