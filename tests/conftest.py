"""Shared test settings.

Hypothesis profiles: `quick` (default, keeps `make test` fast) and `thorough`
(HYPOTHESIS_PROFILE=thorough, used by `make test-slow`).
"""
import os

from hypothesis import HealthCheck, settings

settings.register_profile("quick", max_examples=25, deadline=None,
                          suppress_health_check=[HealthCheck.too_slow])
settings.register_profile("thorough", max_examples=400, deadline=None,
                          suppress_health_check=[HealthCheck.too_slow])
settings.load_profile(os.environ.get("HYPOTHESIS_PROFILE", "quick"))

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))   # tests/zoo.py: the shared test models

import os
import tempfile

# Tests are hermetic: no calibration or tuning database from this machine's cache leaks in
# (the analytic cost model and default schedules are what CI sees).
os.environ["SPARSEC_CACHE"] = tempfile.mkdtemp(prefix="sparsec-test-cache-")
os.environ.pop("SPARSEC_TUNING_DB", None)
