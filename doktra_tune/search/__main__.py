"""`python -m doktra_tune.search ...` (see doktra_tune.search.cli)."""

from doktra_tune.search.cli import main

main()
