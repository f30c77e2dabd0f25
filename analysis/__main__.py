"""`python -m analysis <run-dir or search id> [more ...] [--tracking-uri URI] [--out DIR]`.

Reads the search's runs from MLflow, writes every table the runs support (Markdown, LaTeX, CSV)
under `<run_dir>/tables/` and the figures under `<run_dir>/plots/`, and prints Table 2 (Table 7
when the search is financial only). Bad input: one line on stderr, exit status 2.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from analysis.report import write_report
from analysis.runs import resolve_source
from doktra_tune.errors import ConfigError, DoktraError


def run(targets: list[str], tracking_uri: str | None = None, out: str | None = None) -> int:
    """Tables over all `targets` together (one search per task gives Table 2's columns and Avg.);
    plots per search. Prints Table 2 (with what differs from the paper's setting)."""
    if len(targets) > 1 and out is None:
        raise ConfigError(
            f"{len(targets)} searches given but no output directory; add --out DIR for the combined "
            "tables and plots"
        )
    report = write_report([resolve_source(t, tracking_uri) for t in targets], Path(out) if out else None)
    print(report.summary())
    print(f"wrote {len(report.tables)} tables to {report.out_dir / 'tables'} and {len(report.figures)} plots to "
          f"{report.out_dir / 'plots'}")
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m analysis", description=__doc__.splitlines()[0])
    parser.add_argument("targets", nargs="+", metavar="target",
                        help="run directory (runs/<search_id>) or search id; several: one table")
    parser.add_argument("--tracking-uri", default=None, help="MLflow tracking URI (default: the "
                        "run directory's sqlite store, or $MLFLOW_TRACKING_URI for a search id)")
    parser.add_argument("--out", default=None,
                        help="where tables/ and plots/ go (default: the run dir; required for several)")
    args = parser.parse_args(argv)
    try:
        return run(args.targets, args.tracking_uri, args.out)
    except DoktraError as err:
        print(f"error: {err}", file=sys.stderr)
        return err.exit_code


if __name__ == "__main__":
    sys.exit(main())
