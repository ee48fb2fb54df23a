"""`python -m hubert_ee.benchmark`: the same as `hubert-ee benchmark`."""

import sys

from .cli import main

sys.exit(main())
