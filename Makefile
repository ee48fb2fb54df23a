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

# The set-up prints one line per step; pip and apt-get show errors only (`-qq`: their warnings and progress are
# not what a user came for), and each step that fails stops make with the tool's own error message.
PIP := $(PY) -m pip install -qq --disable-pip-version-check

$(STAMP): setup.py Makefile
	@$(MAKE) --no-print-directory system-packages
	@echo "setting up $(VENV): PyTorch $(TORCH_VERSION) (CPU), torchcodec $(TORCHCODEC_VERSION), this project"
	@test -x $(PY) || $(PYTHON) -m venv $(VENV)
	@$(PIP) torch==$(TORCH_VERSION)
	@$(PIP) torchcodec==$(TORCHCODEC_VERSION)
	@$(PIP) -e ".[test,synth,lm]"
	@$(PIP) --no-deps pyctcdecode==$(PYCTCDECODE_VERSION)
	@touch $(STAMP)

system-packages:
	@need=""; \
	for tool in espeak-ng flite text2wave ffmpeg cmake g++; do command -v $$tool >/dev/null || need=1; done; \
	[ -d /usr/share/games/fortunes ] || need=1; [ -d /usr/share/festival/voices/us/cmu_us_slt_arctic_hts ] || need=1; [ -d /usr/share/wordnet ] || need=1; \
	if [ -n "$$need" ]; then \
	  echo "installing Debian packages: $(APT_PACKAGES)"; \
	  sudo=$$([ "$$(id -u)" = 0 ] || echo sudo); \
	  $$sudo apt-get update -qq >/dev/null && \
	  DEBIAN_FRONTEND=noninteractive $$sudo apt-get install -y -qq -o=Dpkg::Use-Pty=0 $(APT_PACKAGES) >/dev/null; \
	fi

setup: $(STAMP)

test: setup
	$(PY) -m pytest -q -n 2 --dist loadfile --timeout 600 tests

demo: setup
	@$(PY) -m hubert_ee.demo

clean:
	rm -rf $(VENV) outputs build *.egg-info .pytest_cache .hypothesis
