# The two commands: `make dev` runs Cirrus locally, `make test` runs every test tier.
# Both set up everything first (a venv from the pinned requirements, the npm emulators).

# Cirrus runs on Python 3.13, the Flex Consumption runtime in infra/main.bicep. A venv is built with
# PYTHON if you give one, else with the first of these that really is 3.13: python3.13 on PATH (a
# pyenv shim for a version that is not selected fails, so each is tried), `pyenv prefix 3.13`, then
# the newest 3.13 in pyenv's versions directory.
PYTHON_VERSION := 3.13
comma := ,
is-python = "$(1)" -c 'import sys; sys.exit(sys.version_info[:2] != ($(subst .,$(comma),$(2))))' 2>/dev/null

# $(call venv,DIR,VERSION) makes DIR a venv of Python VERSION. One whose python is another version
# (a developer's old 3.11 .venv) or no longer runs is deleted and built again, never reused: its
# pyvenv.cfg is then new, so the rule that installs into it runs again.
define venv
	@if ! $(call is-python,$(1)/bin/python,$(2)); then \
	py='$(PYTHON)'; \
	if [ -n "$$py" ] && ! $(call is-python,$$py,$(2)); then echo "PYTHON=$$py is not Python $(2)" >&2; exit 1; fi; \
	if [ -z "$$py" ]; then \
		for candidate in "$$(command -v python$(2))" "$$(pyenv prefix $(2) 2>/dev/null)/bin/python$(2)" \
			$$(ls -d "$${PYENV_ROOT:-$$HOME/.pyenv}"/versions/$(2)*/bin/python$(2) 2>/dev/null | sort -rV); do \
			if $(call is-python,$$candidate,$(2)); then py="$$candidate"; break; fi; done; \
		if [ -z "$$py" ]; then echo "Python $(2) not found: put python$(2) on PATH, install it with" \
			"'pyenv install $(2)', or run make PYTHON=/path/to/python$(2)" >&2; exit 1; fi; \
	fi; \
	echo "$(1): building a Python $(2) venv with $$py"; \
	rm -rf $(1) && "$$py" -m venv $(1); fi
endef

VENV := .venv
BIN := $(VENV)/bin
CHROMIUM := /usr/bin/chromium

.PHONY: dev test setup lint infra-check unit integration e2e ui bench lock clean FORCE

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

$(VENV)/pyvenv.cfg: FORCE
	$(call venv,$(VENV),$(PYTHON_VERSION))

$(VENV)/.installed: $(VENV)/pyvenv.cfg requirements.txt tools/requirements-dev.txt
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
# checkov itself only counts). Its pins install and run on Python 3.13 like the app's.
# infra/modules/cors.bicep is skipped: its fail() is beyond checkov's parser, and it declares no
# resource (it only checks the CORS parameters).
CHECKOV_VENV := .venv-checkov
infra-check: $(CHECKOV_VENV)/.installed
	@out="$$(BC_SKIP_MAPPING=TRUE $(CHECKOV_VENV)/bin/checkov -d infra --framework bicep \
		--skip-path 'modules/(cors|identity-settings)\.bicep$$' --quiet --compact --skip-download 2>&1)"; status=$$?; echo "$$out"; \
	if echo "$$out" | grep -q "Parsing errors"; then echo "checkov could not parse infra/" >&2; exit 1; fi; \
	if ! echo "$$out" | grep -q "Passed checks: [1-9]"; then echo "checkov checked nothing" >&2; exit 1; fi; \
	exit $$status

$(CHECKOV_VENV)/pyvenv.cfg: FORCE
	$(call venv,$(CHECKOV_VENV),$(PYTHON_VERSION))

$(CHECKOV_VENV)/.installed: $(CHECKOV_VENV)/pyvenv.cfg tools/requirements-checkov.txt
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
# BENCH_ARGS="--repeats 3 --profile /tmp/peer-profile" adds py-spy profiles of both servers. Python
# 3.13 too, so both servers run on the same interpreter.
.PHONY: bench-peer
LITELLM_PROXY_VENV := .venv-litellm-proxy
bench-peer: setup $(LITELLM_PROXY_VENV)/.installed
	$(BIN)/python -m bench.peer $(BENCH_ARGS)

$(LITELLM_PROXY_VENV)/pyvenv.cfg: FORCE
	$(call venv,$(LITELLM_PROXY_VENV),$(PYTHON_VERSION))

$(LITELLM_PROXY_VENV)/.installed: $(LITELLM_PROXY_VENV)/pyvenv.cfg tools/requirements-litellm-proxy.txt
	$(LITELLM_PROXY_VENV)/bin/python -m pip install --quiet --disable-pip-version-check \
		-r tools/requirements-litellm-proxy.txt
	touch $@

# Re-pin after editing tools/requirements*.in (needs pip-tools in the venv). pip-compile runs on the
# venv's Python 3.13, so the pins are the ones Azure's 3.13 runtime resolves.
lock:
	cd tools && ../$(BIN)/pip-compile --quiet --strip-extras --no-header --annotation-style=line \
		--no-emit-index-url --no-emit-find-links -o ../requirements.txt requirements.in
	cd tools && ../$(BIN)/pip-compile --quiet --strip-extras --no-header --annotation-style=line \
		--no-emit-index-url --no-emit-find-links -o requirements-dev.txt requirements-dev.in
	cd tools && ../$(BIN)/pip-compile --quiet --strip-extras --no-header --annotation-style=line \
		--no-emit-index-url --no-emit-find-links -o requirements-checkov.txt requirements-checkov.in
	cd tools && ../$(BIN)/pip-compile --quiet --strip-extras --no-header --annotation-style=line \
		--no-emit-index-url --no-emit-find-links -o requirements-litellm-proxy.txt requirements-litellm-proxy.in

FORCE:

clean:
	rm -rf $(VENV) $(CHECKOV_VENV) $(LITELLM_PROXY_VENV) node_modules .cirrus .pytest_cache .ruff_cache .mypy_cache
