"""Hypothesis settings for the fuzz suite: few examples, derandomized, no example database,
so that a CI run is quick and tries the same cases every time.

``HYPOTHESIS_PROFILE=fuzz-long`` runs many more examples (still derandomized) by hand.
"""

from __future__ import annotations

import os

from hypothesis import HealthCheck, settings

_COMMON = {
    "derandomize": True,
    "database": None,
    "deadline": None,
    "print_blob": True,
    "suppress_health_check": [HealthCheck.too_slow, HealthCheck.function_scoped_fixture],
}
settings.register_profile("fuzz", max_examples=20, **_COMMON)
settings.register_profile("fuzz-long", max_examples=500, **_COMMON)
settings.load_profile(os.environ.get("HYPOTHESIS_PROFILE", "fuzz"))
