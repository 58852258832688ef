# Set-up in two commands: `make demo` (installs everything, renders a demo) and `make test`.
PYTHON ?= python3
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
