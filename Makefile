# One-command set-up: `make run` starts the agent, `make test` runs the tests.
PYTHON ?= python3
VENV   ?= .venv
PY     := $(VENV)/bin/python
CONFIG ?=
# On a board with GPIO, the venv also sees Debian's pin library (python3-lgpio), which
# gpiozero needs for real pins and which does not build from PyPI without a toolchain.
VENV_FLAGS ?= $(if $(wildcard /dev/gpiochip0),--system-site-packages,)

.PHONY: run test lint bench venv system-deps test-deps anchors clean

$(VENV)/.installed: pyproject.toml
	$(PYTHON) -m venv $(VENV_FLAGS) $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -e '.[test]'
	touch $@

venv: $(VENV)/.installed

# Debian packages, installed only when missing (needs root; otherwise the apt-get line to run
# is printed). To run: venv support, PortAudio for sounddevice, and the GPIO pin library on a
# board that has GPIO. To test, also: systemd's systemd-analyze (the unit's security and
# verify tests) and Debian's headless Chromium (a hostile page from another origin).
RUN_DEPS = $(PYTHON) -c "import ensurepip, venv" 2>/dev/null || need="$$need python3-venv"; \
	ldconfig -p 2>/dev/null | grep -q libportaudio.so.2 || need="$$need libportaudio2"; \
	if [ -e /dev/gpiochip0 ] && ! /usr/bin/python3 -c "import lgpio" 2>/dev/null; then need="$$need python3-lgpio"; fi;
TEST_DEPS = command -v systemd-analyze >/dev/null 2>&1 || [ -x /usr/bin/systemd-analyze ] || need="$$need systemd"; \
	command -v chromium >/dev/null 2>&1 || need="$$need chromium"; \
	command -v jq >/dev/null 2>&1 || need="$$need jq";
INSTALL = if [ -n "$$need" ]; then \
	  if command -v apt-get >/dev/null 2>&1 && [ "$$(id -u)" = 0 ]; then \
	    echo "installing:$$need"; \
	    apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq $$need >/dev/null; \
	  else echo "note: missing Debian packages:$$need (run: sudo apt-get install$$need)"; fi; \
	fi

system-deps:
	@need=""; $(RUN_DEPS) $(INSTALL)

test-deps:
	@need=""; $(RUN_DEPS) $(TEST_DEPS) $(INSTALL)

run: system-deps venv
	$(VENV)/bin/ticos-agent run $(if $(CONFIG),--config $(CONFIG))

# Lint and types are gates: `make test` fails on any ruff finding or mypy error before pytest runs.
lint: venv
	$(VENV)/bin/ruff check ticos_agent tests examples bench
	$(VENV)/bin/mypy

# ticos-client 0.7.2's wheel (not installed): tests compare code vendored from it with the original.
ANCHORS = $(VENV)/anchors
anchors: venv
	@ls $(ANCHORS)/ticos_client-0.7.2-*.whl >/dev/null 2>&1 || \
	  $(PY) -m pip download --quiet --no-deps --only-binary=:all: ticos-client==0.7.2 -d $(ANCHORS)

test: test-deps venv lint anchors
	TICOS_TEST_ANCHORS=$(ANCHORS) $(PY) -m pytest -q

bench: venv
	$(PY) bench/load.py

clean:
	rm -rf $(VENV) *.egg-info
