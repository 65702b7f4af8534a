"""`python -m engine.cli ...` runs the `lockstep` command."""

import sys

from engine.cli.main import main

sys.exit(main())
