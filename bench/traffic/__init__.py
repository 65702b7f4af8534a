"""Traffic files: recorded (or generated) API calls that `lockstep replay` re-issues.

`format` reads and writes them; `generate` produces the shipped examples in this folder
(`ci-pipeline.jsonl`, `fleet-metrics.jsonl`, `agent-runs.jsonl`) from a fixed seed.
"""
