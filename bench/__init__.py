"""Benchmark scenarios (`lockstep bench`) and the harness that runs them on pinned cores."""
