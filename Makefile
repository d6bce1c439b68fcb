# Two commands: `make run` serves Tally with demo data; `make test` runs every check.
# Both create .venv and install pinned dependencies (constraints.txt) on first use.

PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
PIP_INSTALL := $(BIN)/pip install --quiet --disable-pip-version-check -c constraints.txt

.PHONY: run test install install-dev browser pdf-libs lint typecheck pytest bench clean

run: $(VENV)/.installed pdf-libs
	$(BIN)/tally migrate
	$(BIN)/tally demo
	TALLY_ENV=$${TALLY_ENV:-development} $(BIN)/tally serve

test: $(VENV)/.installed-dev pdf-libs browser lint typecheck pytest

install: $(VENV)/.installed
install-dev: $(VENV)/.installed-dev

$(VENV)/bin/python:
	@$(PYTHON) -c 'import sys; assert sys.version_info >= (3, 11), "Tally needs Python 3.11 or newer"'
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --disable-pip-version-check --upgrade pip

$(VENV)/.installed: $(VENV)/bin/python pyproject.toml constraints.txt
	$(PIP_INSTALL) -e .
	@touch $@

$(VENV)/.installed-dev: $(VENV)/.installed pyproject.toml constraints.txt
	$(PIP_INSTALL) -e '.[dev]'
	@touch $@

# The browser tests drive a real Chromium. Debian's package when root (as CI is),
# Playwright's own download elsewhere. TALLY_CHROMIUM may name a binary to use instead.
browser: $(VENV)/.installed-dev
	@if [ -n "$$TALLY_CHROMIUM" ] || command -v chromium >/dev/null 2>&1 || command -v chromium-browser >/dev/null 2>&1; then \
	  echo "chromium: found"; \
	elif [ "$$(id -u)" = "0" ] && command -v apt-get >/dev/null 2>&1; then \
	  apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium >/dev/null; \
	else \
	  $(BIN)/playwright install chromium; \
	fi

# Invoice PDFs are drawn by WeasyPrint, which needs Pango. Debian's packages when root (as CI is);
# elsewhere a hint, since invoices work without PDFs until it is installed.
pdf-libs:
	@if ldconfig -p 2>/dev/null | grep -q libpangoft2-1.0; then \
	  echo "pango: found"; \
	elif [ "$$(id -u)" = "0" ] && command -v apt-get >/dev/null 2>&1; then \
	  apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq libpango-1.0-0 libpangoft2-1.0-0 >/dev/null; \
	else \
	  echo "pango: missing; invoice PDFs need it (Debian/Ubuntu: apt install libpango-1.0-0 libpangoft2-1.0-0)"; \
	fi
	@if fc-list 2>/dev/null | grep -qi "dejavu sans"; then \
	  echo "fonts: DejaVu found"; \
	elif [ "$$(id -u)" = "0" ] && command -v apt-get >/dev/null 2>&1; then \
	  apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq fonts-dejavu-core fontconfig >/dev/null; \
	else \
	  echo "fonts: DejaVu missing; invoice PDFs fall back to any font (Debian/Ubuntu: apt install fonts-dejavu-core)"; \
	fi

lint: $(VENV)/.installed-dev
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/lint-imports

typecheck: $(VENV)/.installed-dev
	$(BIN)/mypy

pytest: $(VENV)/.installed-dev
	$(BIN)/pytest -n 3 --dist loadfile

bench: $(VENV)/.installed-dev
	@for b in bench/bench_customers.py bench/ingest.py bench/usage_query.py bench/ledger.py bench/billing_run.py; do echo "== $$b"; $(BIN)/python $$b || exit 1; done

clean:
	rm -rf $(VENV) .tally .pytest_cache .mypy_cache .ruff_cache
