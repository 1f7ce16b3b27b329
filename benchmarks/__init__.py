"""Side-by-side benchmarks of the connector against a hand-written floor and dlt's rest_api.

Run with ``python -m benchmarks.run`` (``--quick`` for a smoke run); see docs/performance.md.
"""
