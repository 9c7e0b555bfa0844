# Two commands do all the set-up on a fresh machine with Python 3.11:
#   make demo   runs the main job (all schemes, 5 seeds each, on the bundled digits dataset)
#   make test   runs the test suite
# Both create (or reuse) the virtualenv in .venv from requirements.txt.
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed-$(shell cksum requirements.txt | cut -d' ' -f1)

.PHONY: demo test venv benchmark
venv: $(STAMP)

$(STAMP): requirements.txt
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -r requirements.txt
	rm -f $(VENV)/.installed-*
	touch $(STAMP)

# The demo: every scheme, 5 seeds each, on digits; the summary with intervals and
# verdicts, the article's claims decided on it, and the cross-scheme panels of layers 1, 5.
demo: $(STAMP)
	$(PY) -m experiments.article.compare --out_dir=runs/compare --results_dir=results
	$(PY) -m experiments.article.claims --compare_dir=runs/compare --out_dir=results
	$(PY) -m experiments.article.crosspanels --compare_dir=runs/compare --layer=1 --out=results/crosspanels_layer1.png
	$(PY) -m experiments.article.crosspanels --compare_dir=runs/compare --layer=5 --out=results/crosspanels_layer5.png

test: $(STAMP)
	$(PY) -m pytest -q -n 2 --dist loadfile --durations=20 tests

benchmark: $(STAMP)
	$(PY) -m experiments.bench.speed
