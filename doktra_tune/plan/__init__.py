"""The plan as data: what a search will run, and what it costs, built without Ray or torch.

`build_plan(cfg)` (search_plan) checks every value of the composed config once (schema) and
returns the search's one `Plan`: per stage its base config and grid, the final protocol's runs
(final), the search id and its run directory (paths). The budget (trials and epoch-units) is a sum
over the plan's runs (budget), the GPU-hour estimate multiplies it by measured throughput
(estimate, token_counts), `search.dry_run=true` prints both (dry_run), and preflight checks the
plan's inputs (data files, models, the tracking server) before anything is written.

| module | job |
|---|---|
| `schema` | the typed configuration (`SearchConfig`) and its value checks |
| `search_plan` | `build_plan`: grids, data config, search id, run directory |
| `paths` | the run directory's settings, relative where they can be (a moved run directory resumes) |
| `final` | the final protocol's runs (`FinalPlan`) and their summary |
| `budget`, `estimate`, `token_counts` | what a plan trains (trials, epoch-units) and its GPU-hours |
| `dry_run` | `search.dry_run=true`: the printed plan |
| `preflight` | the I/O checks before anything is written |

Layer: above the method core and tracking, below `doktra_tune.cluster` and `doktra_tune.search`
(tests/unit/test_layers.py).
"""
