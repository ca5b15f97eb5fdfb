"""Property-based tests (hypothesis) of what the service parses from the network.

They run in `make test`, so they are bounded and deterministic: every test uses the profile
registered here (a fixed number of examples, derandomized, no example database, no deadline),
applied per test with `@fuzz` rather than loaded globally. For a longer local run raise the
budget, e.g. `NAPALMSKY_FUZZ_EXAMPLES=5000 .venv/bin/pytest tests/fuzz`; coverage-guided
fuzzing lives in fuzz/ (see fuzz/README.md).
"""

from __future__ import annotations

import os

from hypothesis import HealthCheck, settings

PROFILE = "napalmsky-fuzz"

settings.register_profile(
    PROFILE,
    max_examples=int(os.environ.get("NAPALMSKY_FUZZ_EXAMPLES", "200")),
    deadline=None,
    derandomize=True,
    database=None,
    print_blob=True,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)
