"""Where a search runs: one Ray session, the nodes it uses, the run directory it owns.

| module | job |
|---|---|
| `ray_session` | Ray settings, connect once / shut down once, per-trial resources |
| `node_check`, `node_probe` | every node checked before a trial (libraries, models in its cache, data, GPUs) |
| `lease` | the run directory's lease: one search per run directory, a stale one taken over |
| `disk` | free disk space and what a stage's checkpoints take |

Layer: above `doktra_tune.plan` (it reads the plan's Ray options and its needs), below
`doktra_tune.search` (tests/unit/test_layers.py).
"""
