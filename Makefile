# Two commands do all the set-up on a fresh machine with Python 3.11:
#   make demo   runs the main job (all schemes on the bundled digits dataset)
#   make test   runs the test suite
# Both create (or reuse) the virtualenv in .venv from requirements.txt.
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed-$(shell cksum requirements.txt | cut -d' ' -f1)
export TF_CPP_MIN_LOG_LEVEL ?= 2

.PHONY: demo test venv benchmark
venv: $(STAMP)

$(STAMP): requirements.txt
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -r requirements.txt
	rm -f $(VENV)/.installed-*
	touch $(STAMP)

demo: $(STAMP)
	$(PY) -m experiments.compare --out_dir=runs/compare --results_dir=results

test: $(STAMP)
	$(PY) -m pytest -q --durations=20 tests

benchmark: $(STAMP)
	$(PY) -m experiments.benchmark
