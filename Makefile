# The two commands of this project: `make demo` and `make test`. Each sets up everything it needs on a fresh
# machine first: Debian packages (speech synthesisers, text sources, ffmpeg), a virtual environment, PyTorch (the
# CPU build, pinned and installed first so that nothing pulls a multi-GB CUDA build), torchcodec, and this project.
SHELL := /bin/bash
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
APT_PACKAGES := espeak-ng flite festival festvox-kallpc16k festvox-kdlpc16k festvox-us-slt-hts fortunes wordnet-base \
	libsndfile1 ffmpeg cmake g++ zlib1g-dev
STAMP := $(VENV)/.hubert-ee-installed
TORCH_VERSION := 2.13.0
# What `datasets` decodes audio with (load_dataset("audiofolder"), Audio columns). 0.14.0 is the release built for
# torch 2.13, but its PyPI wheel is the CUDA build (it links libtorch_cuda); 0.13.0's PyPI wheel is the CPU build and
# decodes with torch 2.13.0 (tests/test_default_model.py, tests/test_train.py). Installed after torch, pinned.
TORCHCODEC_VERSION := 0.13.0

# LM decoding's beam search (setup.py's `lm` extra has the rest). --no-deps: 0.5.0's metadata pins numpy<2, and it
# runs with the numpy 2 that transformers and datasets bring (tests/test_decoding.py, tests/test_language_model.py).
PYCTCDECODE_VERSION := 0.5.0

.PHONY: setup system-packages test demo clean

$(STAMP): setup.py Makefile
	@$(MAKE) --no-print-directory system-packages
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --disable-pip-version-check torch==$(TORCH_VERSION)
	$(PY) -m pip install --quiet --disable-pip-version-check torchcodec==$(TORCHCODEC_VERSION)
	$(PY) -m pip install --quiet --disable-pip-version-check -e ".[test,synth,lm]"
	$(PY) -m pip install --quiet --disable-pip-version-check --no-deps pyctcdecode==$(PYCTCDECODE_VERSION)
	touch $(STAMP)

system-packages:
	@need=""; \
	for tool in espeak-ng flite text2wave ffmpeg cmake g++; do command -v $$tool >/dev/null || need=1; done; \
	[ -d /usr/share/games/fortunes ] || need=1; [ -d /usr/share/festival/voices/us/cmu_us_slt_arctic_hts ] || need=1; [ -d /usr/share/wordnet ] || need=1; \
	if [ -n "$$need" ]; then \
	  sudo=$$([ "$$(id -u)" = 0 ] || echo sudo); \
	  $$sudo apt-get update -qq && DEBIAN_FRONTEND=noninteractive $$sudo apt-get install -y -qq $(APT_PACKAGES); \
	fi

setup: $(STAMP)

test: setup
	$(PY) -m pytest -q -n 2 --dist loadfile --timeout 600 tests

demo: setup
	$(PY) -m hubert_ee.demo

clean:
	rm -rf $(VENV) outputs build *.egg-info .pytest_cache .hypothesis
