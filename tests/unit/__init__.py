"""Unit tests: the method core, the plan, the dry run and the analysis in-process — no Ray runtime, no
MLflow store, no search subprocess. All fast (`python -m pytest -q tests/unit`)."""
