"""Autotuning formats × schedules with a persistent tuning database.

- ``db``: the JSON-lines database (``TuningDB``, ``TuningKey``, ``merge``), crash-safe appends.
- ``space``: a layer's candidates (formats with parameters × the knobs kernel families declare).
- ``measure``: trusted local measurement (one process per batch, correctness before time).
- ``rpc``: measurement on remote devices through TVM's RPC tracker.
- ``search``: warm start from the cost model, exhaustive or model-guided evolutionary search.
- ``driver``: a model's layers grouped and tuned under a budget.
- ``apply``: the database in `sparsec compile` (knobs and tuned format selection).

See docs/autotune.md.
"""
from sparsec.passes.autotune.db import Record, TuningDB, TuningKey, merge  # noqa: F401
from sparsec.passes.autotune.space import Config, FormatSpace  # noqa: F401
