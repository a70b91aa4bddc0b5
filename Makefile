# LimeLight — every target installs what it needs into ./.venv (pinned, see requirements/).
SHELL := /bin/bash
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
# Shared real data (WIDER FACE, weights, clips); never copied into the repo.
LIMELIGHT_DATA ?= $(abspath ../shared/data)
export LIMELIGHT_DATA
export TF_USE_LEGACY_KERAS := 1
export TF_CPP_MIN_LOG_LEVEL := 2

RUNTIME_STAMP := $(VENV)/.runtime-installed
DEV_STAMP := $(VENV)/.dev-installed
DEMO_STAMP := $(VENV)/.demo-installed

.PHONY: help install install-dev demo test fuzz model bench lint cloud-demo api sam-build clean

help:
	@echo "make demo   - install and anonymize a demo video (demo/)"
	@echo "make test   - install everything and run the test suite"
	@echo "make fuzz N=1000 - mutated clips and photos through the CLI (docs/limits.md)"
	@echo "make model  - rebuild the int8 detector from the shared data (model_opt/)"
	@echo "make bench  - print the detector AP/latency table (bench/)"
	@echo "make lint   - cfn-lint the SAM template"
	@echo "make cloud-demo VIDEO=clip.mp4 [KNOWN=dir] OUT=out.mp4 - the AWS workflow, locally on moto"
	@echo "make api    - the job API on 127.0.0.1:\$$LIMELIGHT_API_PORT (8787) over the local workflow (limelight submit --api URL)"
	@echo "make sam-local-invoke-<start|segment|anonymize|join|reassemble|failure|api> - sam local invoke (needs Docker and aws-sam-cli)"
	@echo "    (failure takes EVENT=execution_timed_out.json too: a timed-out job's EventBridge event)"

$(VENV)/bin/python:
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip

$(RUNTIME_STAMP): requirements/runtime.txt requirements/nodeps.txt pyproject.toml | $(VENV)/bin/python
	$(BIN)/pip install -q -r requirements/runtime.txt
	$(BIN)/pip install -q --no-deps face-recognition==1.3.0
	$(BIN)/pip install -q --no-deps -e .
	touch $@

# The tests build clips from the demo's portraits, so the dev set includes the demo's packages.
$(DEV_STAMP): $(RUNTIME_STAMP) requirements/dev.txt requirements/demo.txt requirements/lambda.txt requirements/nodeps.txt
	$(BIN)/pip install -q -r requirements/runtime.txt -r requirements/dev.txt -r requirements/demo.txt
	$(BIN)/pip install -q --no-deps -r requirements/nodeps.txt
	touch $@

$(DEMO_STAMP): $(RUNTIME_STAMP) requirements/demo.txt
	$(BIN)/pip install -q -r requirements/demo.txt
	touch $@

install: $(RUNTIME_STAMP)
install-dev: $(DEV_STAMP)

demo: $(DEMO_STAMP)
	$(BIN)/python -m limelight.demo --out demo

test: $(DEV_STAMP)
	$(BIN)/python -m pytest -q

# Mutated real clips and photos through the CLI (tests/fuzz.py); N cases, SEED for another set.
N ?= 1000
SEED ?= 1
fuzz: $(DEV_STAMP)
	$(BIN)/python -m tests.fuzz --cases $(N) --seed $(SEED) --data $(LIMELIGHT_DATA)

model: $(DEV_STAMP)
	$(BIN)/python -m model_opt.pipeline --data $(LIMELIGHT_DATA)

bench: $(DEV_STAMP)
	$(BIN)/python bench/detector.py --data $(LIMELIGHT_DATA)

lint: $(DEV_STAMP)
	$(BIN)/cfn-lint template.yaml

cloud-demo: $(DEV_STAMP)
	@test -n "$(VIDEO)" -a -n "$(OUT)" || { echo "usage: make cloud-demo VIDEO=path [KNOWN=dir] OUT=path"; exit 2; }
	$(BIN)/python -m infra.local $(VIDEO) $(if $(KNOWN),--known $(KNOWN)) --out $(OUT)

# The job API on 127.0.0.1 (LIMELIGHT_API_PORT, default 8787), over the local workflow; Ctrl-C stops it.
api: $(DEV_STAMP)
	$(BIN)/python -m infra.api

# sam local invoke: needs Docker and aws-sam-cli (in its own environment: it pins an older boto3).
# ENV=file.json names a deployed stack's buckets; the same event files drive the tests.
SAM ?= sam
sam-build:
	$(SAM) build
sam-local-invoke-start: sam-build
	$(SAM) local invoke StartFunction -e infra/events/s3_put_video.json $(if $(ENV),--env-vars $(ENV))
sam-local-invoke-segment: sam-build
	$(SAM) local invoke SegmentFunction -e infra/events/segment.json $(if $(ENV),--env-vars $(ENV))
sam-local-invoke-anonymize: sam-build
	$(SAM) local invoke AnonymizeFunction -e infra/events/anonymize.json $(if $(ENV),--env-vars $(ENV))
sam-local-invoke-join: sam-build
	$(SAM) local invoke JoinFunction -e infra/events/join.json $(if $(ENV),--env-vars $(ENV))
sam-local-invoke-reassemble: sam-build
	$(SAM) local invoke ReassembleFunction -e infra/events/reassemble.json $(if $(ENV),--env-vars $(ENV))
sam-local-invoke-api: sam-build
	$(SAM) local invoke ApiFunction -e infra/events/$(or $(EVENT),api_create_job.json) $(if $(ENV),--env-vars $(ENV))
sam-local-invoke-failure: sam-build
	$(SAM) local invoke FailureFunction -e infra/events/$(or $(EVENT),failure.json) $(if $(ENV),--env-vars $(ENV))

clean:
	rm -rf $(VENV) demo bench/out .pytest_cache
