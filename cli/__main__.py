"""`python -m mentalarena.cli`: the same as the `mentalarena` command (for `accelerate launch -m`)."""

import sys

from mentalarena.cli import main

sys.exit(main())
