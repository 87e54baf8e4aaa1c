# One-command set-up: `make run` starts the agent, `make test` runs the tests.
PYTHON ?= python3
VENV   ?= .venv
PY     := $(VENV)/bin/python
CONFIG ?=

.PHONY: run test bench venv system-deps clean

$(VENV)/.installed: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -e '.[test]'
	touch $@

venv: $(VENV)/.installed

# Debian packages the audio tests and playback need (PortAudio for sounddevice).
system-deps:
	@if ! ldconfig -p 2>/dev/null | grep -q libportaudio.so.2; then \
	  if command -v apt-get >/dev/null 2>&1 && [ "$$(id -u)" = 0 ]; then \
	    apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq libportaudio2 >/dev/null; \
	  else echo "note: libportaudio2 is missing; audio is disabled (apt-get install libportaudio2)"; fi; \
	fi

run: system-deps venv
	$(VENV)/bin/ticos-agent run $(if $(CONFIG),--config $(CONFIG))

test: system-deps venv
	$(PY) -m pytest -q

bench: venv
	$(PY) bench/load.py

clean:
	rm -rf $(VENV) *.egg-info
