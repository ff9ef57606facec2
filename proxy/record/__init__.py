"""The usage of record in PostgreSQL: a copy of every usage event that outlives Redis.

- ``db.py``: connecting, the versioned migrations (``migrations/NNN_*.sql``), monthly partitions.
- ``writer.py``: a batch of events as ``usage_events`` rows plus their daily and monthly rollups,
  in one transaction, once per request id.
- ``sink.py``: the loop that drains every project's stream into it (the Redis side is
  ``proxy/ledger/drain.py``); ``serving.py``: what the settings make of it.
- ``statement.py``, ``reconcile.py``, ``restore.py``: a month's statement, its differences with
  Redis, and Redis's aggregates rebuilt from it (through ``proxy/ledger/aggregates.py``).

Nothing here imports Redis: every Redis call goes through ``proxy/ledger/``.
"""
