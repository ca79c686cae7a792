"""`python -m sidecar._cli`: the same as the `sidecar` script."""

import sys

from . import main

sys.exit(main())
