"""Test-suite configuration: Hypothesis profiles.

Two profiles, chosen by `HYPOTHESIS_PROFILE` (default `dev`; `ci` whenever `CI` is set, and in
`make test`):

- `ci`: derandomized (the same examples on every run and every machine, so a CI failure is
  reproducible and a green run is not luck), no example database (nothing carried between runs),
  no deadline (shared 2-core machines stall; speed is measured in bench/, never asserted here),
  and at most 100 examples unless a test asks for a specific number.
- `dev`: Hypothesis' random exploration with its example database, for finding new failures
  locally.

A test's own `@settings(...)` refines the loaded profile; none turns derandomization off.
"""

from __future__ import annotations

import os

from hypothesis import HealthCheck, settings

settings.register_profile(
    "ci",
    derandomize=True,
    database=None,
    deadline=None,
    max_examples=100,
    print_blob=True,
    suppress_health_check=[HealthCheck.too_slow],
)
settings.register_profile("dev", deadline=None)
settings.load_profile(
    os.environ.get("HYPOTHESIS_PROFILE") or ("ci" if os.environ.get("CI") else "dev")
)
