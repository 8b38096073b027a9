"""`python -m attractor`: the `attractor` command line."""

import sys

from attractor.cli import main

sys.exit(main())
