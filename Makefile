# spanqa — every target that needs Python creates .venv from requirements.txt first.
#   make demo                         offline demo: both models on generated data, tiny BERT, W&B offline
#   make smoke model=spanbert_crf     the real configuration on 300 questions and 20 steps: the first minute on a new machine
#   make train model=spanbert_crf     the real experiment (Hub or local files); ARGS="..." passes Hydra overrides and flags
#   make test                         the test suite (offline, a few minutes on 2 cores)
# Variables: lower case names a Hydra config group (model, experiment, launcher), upper case anything else.
SHELL := /bin/bash
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python

# A variable this Makefile does not read (MODEL=…, modle=…) would be ignored, and another run would start than the
# one asked for: it stops make instead. predict and push take a finished run: MODEL= there is a slip for RUN=.
VARIABLES := model experiment launcher ARGS RUNS RUN REPO FILE OUT QUESTION CONTEXT NGPUS PYTHON
GIVEN := $(foreach v,$(.VARIABLES),$(if $(filter command line,$(origin $(v))),$(v)))
UNKNOWN := $(firstword $(filter-out $(VARIABLES),$(GIVEN)))
ifneq ($(UNKNOWN),)
OTHER_CASE := $(filter $(shell echo '$(UNKNOWN)' | tr A-Z a-z) $(shell echo '$(UNKNOWN)' | tr a-z A-Z),$(VARIABLES))
CLOSEST := $(if $(and $(filter MODEL,$(UNKNOWN)),$(filter predict push,$(MAKECMDGOALS))),RUN,$(OTHER_CASE))
$(error $(UNKNOWN)= is not a variable of this Makefile$(if $(CLOSEST), (did you mean $(CLOSEST)=?)): its variables are model experiment launcher (Hydra config groups) and ARGS RUNS RUN REPO FILE OUT QUESTION CONTEXT NGPUS PYTHON)
endif

ifneq ($(filter predict,$(MAKECMDGOALS)),)
ifeq ($(RUN),)
$(error make predict needs RUN=<run dir or checkpoint dir>$(if $(model), (model= names a config group, for make train)))
endif
endif
ifneq ($(filter push,$(MAKECMDGOALS)),)
$(if $(RUN),,$(error make push needs RUN=<finished run dir> and REPO=<namespace/name>))
$(if $(REPO),,$(error make push needs RUN=<finished run dir> and REPO=<namespace/name>))
endif

model ?=
ARGS ?=
RUNS ?=
MODEL_OVERRIDE := $(if $(model),model=$(model),)
experiment ?= spanbert_vs_crf
launcher ?=
LAUNCHER_OVERRIDE := $(if $(launcher),hydra/launcher=$(launcher),)
DEMO_DIR := outputs/demo/$(shell date +%Y-%m-%d_%H-%M-%S)
NGPUS ?= 2
DDP_DIR := outputs/runs/$(shell date +%Y-%m-%d)/$(shell date +%H-%M-%S)_$(or $(model),spanbert)-ddp$(NGPUS)

.DEFAULT_GOAL := help
.PHONY: help setup smoke train train-ddp demo test test-slow lint sweep compare predict push bench-postprocess bench-crf bench-throughput bench-trainer

help:  ## list the targets
	@grep -E '^[a-zA-Z_-]+:.*## ' $(MAKEFILE_LIST) | awk -F':.*## ' '{printf "  make %-20s %s\n", $$1, $$2}'

$(VENV)/.installed: requirements.txt pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -r requirements.txt
	$(PY) -m pip install --quiet --no-deps --no-build-isolation -e .
	touch $@

setup: $(VENV)/.installed  ## create .venv from requirements.txt (and install spanqa in editable mode)

smoke: setup  ## the real configuration on 300 questions, 20 steps, one evaluation: make smoke model=spanbert_crf, then make train
	$(PY) -m spanqa.train experiment=smoke $(MODEL_OVERRIDE) $(ARGS)

train: setup  ## train one model: make train model=spanbert_crf ARGS="seed=2 optimizer.lr=3e-5"
	$(PY) -m spanqa.train $(MODEL_OVERRIDE) $(ARGS)

demo: setup  ## offline demo of the whole pipeline, both models, then their comparison (minutes on 2 CPU cores)
	$(PY) -m spanqa.train --multirun experiment=demo model=spanbert,spanbert_crf hydra.sweep.dir=$(DEMO_DIR) $(ARGS)
	$(PY) -m spanqa.compare $(DEMO_DIR) --out $(DEMO_DIR)/compare

test: setup  ## run the tests (offline, a few minutes on 2 cores); the slow end-to-end ones: make test-slow
	$(PY) -m pytest -q -m "not slow" $(ARGS)

test-slow: setup  ## end-to-end checks: demo models learn, resume, preemption, sweeps and Optuna, compiled vs eager, DDP on CPU, the SpanBERT release format
	$(PY) -m pytest -q -m slow $(ARGS)

train-ddp: setup  ## data-parallel training on NGPUS GPUs of one machine (trainer.batch_size is per GPU): make train-ddp NGPUS=4 model=spanbert_crf
	$(PY) -m torch.distributed.run --standalone --nproc_per_node $(NGPUS) -m spanqa.train $(MODEL_OVERRIDE) hydra.run.dir=$(DDP_DIR) $(ARGS)

sweep: setup  ## Hydra multirun of an experiment (default spanbert_vs_crf: both models x 3 seeds); launcher=slurm submits jobs
	$(PY) -m spanqa.train --multirun experiment=$(experiment) $(LAUNCHER_OVERRIDE) $(ARGS)

compare: setup  ## compare finished runs: make compare [RUNS="outputs/multirun/spanbert_vs_crf/<time>"] [ARGS="--baseline spanbert --candidate spanbert_crf"]
	$(PY) -m spanqa.compare $(RUNS) $(ARGS)

predict: setup  ## answer questions: make predict RUN=<run or checkpoint dir> QUESTION="…" CONTEXT="…", or FILE=<SQuAD JSON or JSONL> [OUT=predictions.json]
	$(PY) -m spanqa.predict --model "$$RUN" $(if $(FILE),--file "$$FILE",--question "$$QUESTION" --context "$$CONTEXT") $(if $(OUT),--out "$$OUT") $(ARGS)

push: setup  ## publish a run's model/ (with its model card) to the Hub, private: make push RUN=<run dir> REPO=<user/name> [ARGS="--public"]
	$(PY) -m spanqa.push "$$RUN" --repo "$$REPO" $(ARGS)

lint: setup  ## ruff check + format check
	$(VENV)/bin/ruff check src tests && $(VENV)/bin/ruff format --check src tests

bench-postprocess: setup  ## vectorised post-processing vs a per-window loop, dev-sized input
	$(PY) -m spanqa.benchmarks.postprocess $(ARGS)

bench-throughput: setup  ## throughput, MFU and projected 6-epoch time of both heads (ARGS="--device cuda --compile")
	$(PY) -m spanqa.benchmarks.throughput $(ARGS)

bench-crf: setup  ## CRF vs plain step time, both CRF forward algorithms (ARGS="--size tiny", "--device cuda")
	$(PY) -m spanqa.benchmarks.crf_step $(ARGS)

bench-trainer: setup  ## the project's QATrainer: steps/s, projected 6-epoch time, eval rate, per head and compile mode
	$(PY) -m spanqa.benchmarks.trainer_steps $(ARGS)
