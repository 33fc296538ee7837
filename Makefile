VENV ?= .venv
PYTHON ?= python3
DATA ?= data
STEPS ?= 1 2 3
THREADS ?= 1
PY := $(VENV)/bin/python

.PHONY: help train test notebooks clean

## make help: list these targets
help:
	@sed -n 's/^## //p' Makefile

# Each stamp is refreshed when its requirements file changes; pip then installs only what is missing.
# A venv without pip (left by a first try before python3-venv was installed) is made again.
$(VENV)/.runtime: requirements.txt
	$(PY) -m pip --version >/dev/null 2>&1 || $(PYTHON) -m venv --clear $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -r requirements.txt
	touch $@

$(VENV)/.dev: requirements-dev.txt $(VENV)/.runtime
	$(PY) -m pip install --quiet -r requirements-dev.txt
	touch $@

## make train [DATA=folder with MNIST/raw]: train Model_3 with its recipe, seed 1, into runs/ (downloads MNIST into DATA if missing)
train: $(VENV)/.runtime
	$(PY) train.py --model Model_3 --data-dir "$(DATA)"

## make test: run the test suite (set MNIST_DIR to also run the real-data tests)
test: $(VENV)/.dev
	$(PY) -m pytest -q tests

## make clean: remove .venv/ and the caches
clean:
	rm -rf $(VENV) .pytest_cache
	find . -name __pycache__ -type d -prune -exec rm -rf {} +

# Papermill leaves timestamps in the metadata, and its injected-parameters cell would make a Colab "Run all" reuse
# this machine's paths: keep only what renders, and turn the injected values into a comment that records them.
NB_CLEAN = import nbformat, sys; nb = nbformat.read(sys.argv[1], 4); nb.metadata.pop("papermill", None); \
	[c.metadata.pop(k, None) for c in nb.cells for k in ("execution", "papermill")]; \
	[c.update(source="\n".join(["\# The committed run was executed with these values (papermill):"] + \
	  ["\# " + l for l in c.source.splitlines()[1:]])) for c in nb.cells if "injected-parameters" in c.metadata.get("tags", [])]; \
	nbformat.write(nb, sys.argv[1])

## make notebooks [DATA=...] [THREADS=...] [STEPS="1 2 3"]: execute the notebooks of STEPS in place (full
## runs; results/ and assets/ refreshed), each with THREADS CPU threads, 1 by default as the committed executions
## ran: on a CPU a training run's numbers can depend on the thread count
notebooks: $(VENV)/.dev
	for n in $(STEPS); do \
	  OMP_NUM_THREADS=$(THREADS) $(PY) -m papermill --cwd . -k python3 S7_Step$$n.ipynb S7_Step$$n.ipynb \
	    -p DATA_DIR "$(DATA)" -p SAVE True \
	  && $(PY) -c '$(NB_CLEAN)' S7_Step$$n.ipynb || exit 1; done
