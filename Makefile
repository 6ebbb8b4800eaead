# The two commands: `make dev` runs Cirrus locally, `make test` runs every test tier.
# Both set up everything first (a venv from the pinned requirements, the npm emulators).

PYTHON ?= python3.11
VENV := .venv
BIN := $(VENV)/bin
CHROMIUM := /usr/bin/chromium

.PHONY: dev test setup lint infra-check unit integration e2e ui bench lock clean

dev: setup
	$(BIN)/python -m tools.stack $(STACK_ARGS)

test: setup $(CHROMIUM) lint infra-check
	$(BIN)/python -m pytest -c tests/pytest.ini tests/unit tests/integration tests/e2e $(PYTEST_ARGS)
	$(BIN)/python -m pytest -c tests/pytest.ini tests/ui $(PYTEST_ARGS)

setup: $(VENV)/.installed node_modules/.installed

# The UI tier's browser: Debian's chromium (Playwright's own download cannot reach its CDN here).
# Only the tests need it, so `make dev` never asks for apt.
$(CHROMIUM):
	$(if $(filter 0,$(shell id -u)),,sudo) apt-get update
	$(if $(filter 0,$(shell id -u)),,sudo) apt-get install -y --no-install-recommends chromium

$(VENV)/.installed: requirements.txt tools/requirements-dev.txt
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --disable-pip-version-check \
		-r requirements.txt -r tools/requirements-dev.txt
	touch $@

node_modules/.installed: package.json package-lock.json
	npm ci --no-audit --no-fund --loglevel=error
	touch $@

lint: setup
	$(BIN)/ruff check --config tools/ruff.toml .
	$(BIN)/ruff format --config tools/ruff.toml --check .
	$(BIN)/mypy --config-file tools/mypy.ini

# checkov on infra/ (Bicep), offline: no guideline download, no platform mapping. It lives in its
# own venv because its pins (boto3, packaging) clash with the app's. Fails on any failed check that
# is not skipped with a written reason in the Bicep, and on a file checkov cannot parse (which
# checkov itself only counts).
CHECKOV_VENV := .venv-checkov
infra-check: $(CHECKOV_VENV)/.installed
	@out="$$(BC_SKIP_MAPPING=TRUE $(CHECKOV_VENV)/bin/checkov -d infra --framework bicep \
		--quiet --compact --skip-download 2>&1)"; status=$$?; echo "$$out"; \
	if echo "$$out" | grep -q "Parsing errors"; then echo "checkov could not parse infra/" >&2; exit 1; fi; \
	if ! echo "$$out" | grep -q "Passed checks: [1-9]"; then echo "checkov checked nothing" >&2; exit 1; fi; \
	exit $$status

$(CHECKOV_VENV)/.installed: tools/requirements-checkov.txt
	test -x $(CHECKOV_VENV)/bin/python || $(PYTHON) -m venv $(CHECKOV_VENV)
	$(CHECKOV_VENV)/bin/python -m pip install --quiet --disable-pip-version-check -r tools/requirements-checkov.txt
	touch $@

unit integration e2e: setup
	$(BIN)/python -m pytest -c tests/pytest.ini tests/$@ $(PYTEST_ARGS)

ui: setup $(CHROMIUM)
	$(BIN)/python -m pytest -c tests/pytest.ini tests/$@ $(PYTEST_ARGS)

bench: setup
	$(BIN)/python -m bench

# Cirrus against LiteLLM's own proxy (its own venv, like checkov's: the proxy's pins are not the
# app's), same fake provider, same run. `make bench-peer BENCH_ARGS=--quick` for a smoke run;
# BENCH_ARGS="--repeats 3 --profile /tmp/peer-profile" adds py-spy profiles of both servers.
.PHONY: bench-peer
LITELLM_PROXY_VENV := .venv-litellm-proxy
bench-peer: setup $(LITELLM_PROXY_VENV)/.installed
	$(BIN)/python -m bench.peer $(BENCH_ARGS)

$(LITELLM_PROXY_VENV)/.installed: tools/requirements-litellm-proxy.txt
	test -x $(LITELLM_PROXY_VENV)/bin/python || $(PYTHON) -m venv $(LITELLM_PROXY_VENV)
	$(LITELLM_PROXY_VENV)/bin/python -m pip install --quiet --disable-pip-version-check \
		-r tools/requirements-litellm-proxy.txt
	touch $@

# Re-pin after editing tools/requirements*.in (needs pip-tools in the venv).
lock:
	cd tools && ../$(BIN)/pip-compile --quiet --strip-extras --no-header --annotation-style=line \
		--no-emit-index-url --no-emit-find-links -o ../requirements.txt requirements.in
	cd tools && ../$(BIN)/pip-compile --quiet --strip-extras --no-header --annotation-style=line \
		--no-emit-index-url --no-emit-find-links -o requirements-dev.txt requirements-dev.in
	cd tools && ../$(BIN)/pip-compile --quiet --strip-extras --no-header --annotation-style=line \
		--no-emit-index-url --no-emit-find-links -o requirements-checkov.txt requirements-checkov.in
	cd tools && ../$(BIN)/pip-compile --quiet --strip-extras --no-header --annotation-style=line \
		--no-emit-index-url --no-emit-find-links -o requirements-litellm-proxy.txt requirements-litellm-proxy.in

clean:
	rm -rf $(VENV) $(CHECKOV_VENV) $(LITELLM_PROXY_VENV) node_modules .cirrus .pytest_cache .ruff_cache .mypy_cache
