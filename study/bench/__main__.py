"""`python -m study.bench`: see study.bench.cli."""

import sys

from study.bench.cli import main

sys.exit(main())
