# The two commands: `make dev` runs Cirrus locally, `make test` runs every test tier.
# Both set up everything first (a venv from the pinned requirements, the npm emulators).

PYTHON ?= python3.11
VENV := .venv
BIN := $(VENV)/bin

.PHONY: dev test setup lint unit integration e2e bench lock clean

dev: setup
	$(BIN)/python -m tools.stack $(STACK_ARGS)

test: setup lint
	$(BIN)/python -m pytest -c tests/pytest.ini $(PYTEST_ARGS)

setup: $(VENV)/.installed node_modules/.installed

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

unit integration e2e: setup
	$(BIN)/python -m pytest -c tests/pytest.ini tests/$@ $(PYTEST_ARGS)

bench: setup
	$(BIN)/python -m bench

# Re-pin after editing tools/requirements*.in (needs pip-tools in the venv).
lock:
	cd tools && ../$(BIN)/pip-compile --quiet --strip-extras --no-header --annotation-style=line \
		--no-emit-index-url --no-emit-find-links -o ../requirements.txt requirements.in
	cd tools && ../$(BIN)/pip-compile --quiet --strip-extras --no-header --annotation-style=line \
		--no-emit-index-url --no-emit-find-links -o requirements-dev.txt requirements-dev.in

clean:
	rm -rf $(VENV) node_modules .cirrus .pytest_cache .ruff_cache
