# Set-up in two commands: `make demo` (installs everything, renders a demo) and `make test`.
# mediapipe 0.10.21 has wheels for Python 3.10-3.12 only: the first such interpreter found is used (Debian 12's
# python3 is 3.11; Debian 13's is 3.13, so there a 3.10-3.12 must be installed first, or named: PYTHON=...).
PYTHON ?= $(firstword $(foreach candidate,python3 python3.12 python3.11 python3.10,\
  $(shell command -v $(candidate) >/dev/null 2>&1 && $(candidate) -c 'import sys; sys.exit(not (3, 10) <= sys.version_info[:2] <= (3, 12))' 2>/dev/null && echo $(candidate))))
VENV ?= .venv
BIN := $(VENV)/bin
# Debian packages: OpenCV's GUI build (pulled in by mediapipe) needs libGL and GLib; venv and pip for Python;
# a CJK-capable font for the visible "AI生成 / AI-generated" label, and DejaVu for captions in other scripts;
# espeak-ng (with its library) to speak text;
# Chromium and its driver for the studio's browser test.
APT_PACKAGES := python3 python3-venv python3-pip libgl1 libglib2.0-0 fonts-wqy-microhei fonts-dejavu-core espeak-ng chromium chromium-driver

.PHONY: demo test install system-deps lint bench eval clean

demo: install
	$(BIN)/vivify demo -o out/demo --overwrite

test: install lint
	$(BIN)/python -m pytest

install: system-deps $(VENV)/.installed

# Installs the Debian packages that are missing, when run as root on a Debian-like system.
system-deps:
	@missing=""; for p in $(APT_PACKAGES); do dpkg -s $$p >/dev/null 2>&1 || missing="$$missing $$p"; done; \
	if [ -n "$$missing" ]; then \
	  if [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null; then \
	    apt-get update && DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends $$missing; \
	  else echo "missing Debian packages:$$missing (run 'make install' as root, or install them)"; fi; \
	fi

$(VENV)/.installed: pyproject.toml
	@test -n "$(PYTHON)" || { echo "vivify needs Python 3.10, 3.11 or 3.12 (mediapipe 0.10.21 has no wheel for" \
	  "$$(python3 --version 2>&1)): install one and run make PYTHON=python3.12"; exit 2; }
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e ".[test]"
	touch $@

lint: install
	$(BIN)/ruff check src tests

bench: install
	$(BIN)/vivify bench

eval: install
	$(BIN)/vivify eval reenact ../shared/media/talking/*.mp4 ../shared/media/driving/*.mp4
	$(BIN)/vivify eval watermark ../shared/media/talking/*.mp4 ../shared/media/driving/*.mp4

clean:
	rm -rf $(VENV) out build *.egg-info src/*.egg-info
