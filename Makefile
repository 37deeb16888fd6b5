# Two commands: `make run` serves the demo, `make test` runs the whole suite.
PYTHON ?= $(shell command -v python3.11 || command -v python3)
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed

MO     := $(patsubst %.po,%.mo,$(wildcard translations/*/LC_MESSAGES/messages.po))

.PHONY: install run migrate demo test lint format clean messages screenshots bench

$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --disable-pip-version-check -e '.[dev]'
	touch $(STAMP)

install: $(STAMP) $(MO)

translations/%/LC_MESSAGES/messages.mo: translations/%/LC_MESSAGES/messages.po $(STAMP)
	$(BIN)/pybabel compile --use-fuzzy -i $< -o $@

# After changing user-facing text: refresh the template and the catalogs, then translate.
messages: install
	$(BIN)/pybabel extract -F babel.cfg -k _l -k lazy_gettext --no-location --omit-header -o translations/messages.pot .
	$(BIN)/pybabel update -i translations/messages.pot -d translations --no-wrap

migrate: install
	$(BIN)/lethe db upgrade

demo: migrate
	$(BIN)/lethe demo setup

# The demo shortens the cooling-off period to one minute so the whole path can be walked
# in a few minutes; production keeps the default of three days.
run: demo
	@echo "Lethe: portal http://127.0.0.1:5000/  staff http://127.0.0.1:5000/admin/"
	@trap 'trap - INT TERM EXIT; kill 0' INT TERM EXIT; \
	export LETHE_COOLING_OFF_MINUTES=$${LETHE_COOLING_OFF_MINUTES:-1}; \
	$(BIN)/lethe worker --beat & \
	$(BIN)/lethe run --host 127.0.0.1 --port 5000

# The suite runs on every core (each pytest worker has its own databases, ports and
# folders); TEST_JOBS=0 runs it in one process.
TEST_JOBS ?= $(shell nproc 2>/dev/null || echo 2)
test: install
	$(BIN)/pytest -n $(TEST_JOBS)

# Refresh docs/screenshots/ (every portal page in every language, the main staff pages,
# the first page of a sample proof of deletion in each language).
screenshots: install
	LETHE_SCREENSHOTS=1 $(BIN)/pytest tests/e2e/test_portal_browser.py tests/e2e/test_admin_browser.py
	$(BIN)/python scripts/proof_screenshots.py

# Benchmarks (bench/): generate a CRM of 1M customers on PostgreSQL and MariaDB (100k on
# SQLite), measure erasure, proofs and export, print a table and write docs/benchmarks.md.
bench: install
	$(BIN)/python -m bench.run

lint: install
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/bandit -q -r core portal admin connectors -lll

format: install
	$(BIN)/ruff format .
	$(BIN)/ruff check --fix .

clean:
	rm -rf $(VENV) instance .pytest_cache .ruff_cache *.egg-info
