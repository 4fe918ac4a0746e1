"""`python -m compare.data --out data/real`: build the real corpora (prepare.py)."""

import sys

from compare.data.prepare import main

sys.exit(main())
