# The two commands of the README: `make run` and `make test`. Both need only Python 3.11 and make.
PYTHON ?= python3.11
VENV := .venv
BIN := $(VENV)/bin
HOST ?= 127.0.0.1
PORT ?= 8000
# daphne starts through nexus.serve, the one definition of its flags (both WebSocket size limits
# at 4x Nexus's own 1 MiB, so Nexus answers an oversized frame itself). Extra daphne flags go here.
DAPHNE_FLAGS ?=

.PHONY: run test lint format cluster clean vendor

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip

# llama-cpp-python compiles llama.cpp for the CPU it is built on (-march=native), and pip caches
# that wheel under its version alone: a wheel built on a CPU with more instructions dies here with
# "Illegal instruction" in the middle of a reply. Nexus builds it once for x86-64-v3 (AVX2, FMA; the
# flags in scripts/llama-cmake-args, which aarch64 ignores), into a wheelhouse of its own outside
# the checkout (clones and CI on the same machine reuse it), and installs that wheel.
LLAMA := llama-cpp-python==$(shell sed -n 's/^llama-cpp-python==//p' requirements.txt)
WHEELHOUSE ?= $(HOME)/.cache/nexus/wheels/$(subst ==,-,$(LLAMA))-$(shell cksum < scripts/llama-cmake-args | cut -d' ' -f1)

$(WHEELHOUSE)/.built: | $(BIN)/python
	mkdir -p $(WHEELHOUSE)
	CMAKE_ARGS="$$(cat scripts/llama-cmake-args)" $(BIN)/pip wheel --quiet --no-cache-dir --no-deps \
		--wheel-dir $(WHEELHOUSE) $(LLAMA)
	touch $@

$(VENV)/.llama: $(WHEELHOUSE)/.built | $(BIN)/python
	$(BIN)/pip install --quiet --no-deps --force-reinstall --no-index --find-links $(WHEELHOUSE) $(LLAMA)
	touch $@

$(VENV)/.installed-run: requirements.txt $(VENV)/.llama | $(BIN)/python
	$(BIN)/pip install --quiet -r requirements.txt
	touch $@

$(VENV)/.installed-dev: requirements.txt requirements-dev.txt $(VENV)/.llama | $(BIN)/python
	$(BIN)/pip install --quiet -r requirements-dev.txt
	touch $(VENV)/.installed-run $@

# The chat page's WebSocket sends an Origin header: allow the address `make run` serves on.
run: export NEXUS_WS_ALLOWED_ORIGINS ?= http://$(HOST):$(PORT),http://localhost:$(PORT)
# seed_demo refuses its published passwords unless they are asked for: `make run` is one person's
# machine, so it asks (set your own in the environment to override them).
run: export NEXUS_DEMO_PASSWORD ?= nexus-demo-password
run: export NEXUS_ADMIN_PASSWORD ?= nexus-admin-password
run: $(VENV)/.installed-run
	$(BIN)/python manage.py migrate --noinput
	$(BIN)/python manage.py seed_demo
	@echo ""
	@echo "Nexus is starting on http://$(HOST):$(PORT)/"
	@echo "  Chat:   open http://$(HOST):$(PORT)/ and log in as demo / $$NEXUS_DEMO_PASSWORD"
	@echo "  Admin:  http://$(HOST):$(PORT)/admin/ (admin / $$NEXUS_ADMIN_PASSWORD)"
	@echo "  Health: http://$(HOST):$(PORT)/health    API docs: http://$(HOST):$(PORT)/api/docs/"
	@echo ""
	$(BIN)/python -m nexus.serve -b $(HOST) -p $(PORT) $(DAPHNE_FLAGS)

# --durations: the run ends with its 25 slowest tests (setup, call and teardown each), to keep them seen.
test: $(VENV)/.installed-dev
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/lint-imports
	$(BIN)/mypy
	$(BIN)/python -m pytest --durations=25 $(PYTEST_ARGS)

lint: $(VENV)/.installed-dev
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/lint-imports
	$(BIN)/mypy

format: $(VENV)/.installed-dev
	$(BIN)/ruff check --fix .
	$(BIN)/ruff format .

cluster: $(VENV)/.installed-run
	$(BIN)/python -m scripts.cluster

clean:
	rm -rf $(VENV) var/static .pytest_cache .ruff_cache .import_linter_cache .mypy_cache

# The chat page's browser libraries (Markdown, sanitizer, highlighter), pinned in
# static/vendor/package.json: needs npm; the copies are committed, so `make run` does not.
vendor:
	scripts/vendor-js.sh
