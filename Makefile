# The two entry points of README.md. Each installs what it needs into .venv first.
PYTHON ?= python3
VENV   := .venv
STAMP  := $(VENV)/.installed-stamp

.PHONY: demo test lint chromium

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(VENV)/bin/pip install --quiet --upgrade pip
	$(VENV)/bin/pip install --quiet -e '.[dev]'
	touch $(STAMP)

demo: $(STAMP)
	$(VENV)/bin/pine demo $(ARGS)

test: $(STAMP) chromium
	$(VENV)/bin/ruff check .
	$(VENV)/bin/pytest $(ARGS)

# The dashboard's browser test drives Debian's Chromium (never a browser downloaded by a test tool).
# Installed only as root; otherwise that test is skipped and says why.
chromium:
	@command -v chromium >/dev/null || { [ "$$(id -u)" = 0 ] && (apt-get update && apt-get install -y chromium) \
		|| echo "chromium not installed (needs root): the dashboard browser test will be skipped"; }

lint: $(STAMP)
	$(VENV)/bin/ruff check .
