"""`python -m doktra_tune.search task=chemprot preset=cpu [key=value ...]`: the Hydra entry point.

`main` composes the overrides once up front (an unknown task, preset or key is a one-line error,
exit 2, before Ray or torch load), then hands over to Hydra (`--help`, `--cfg job`, the run).
"""

from __future__ import annotations

import sys
from pathlib import Path

import hydra
from hydra import compose, initialize_config_dir
from hydra.core.global_hydra import GlobalHydra
from hydra.core.hydra_config import HydraConfig
from omegaconf import DictConfig

from doktra_tune.errors import ConfigError, DoktraError

CONF_DIR = Path(__file__).resolve().parents[1] / "conf"
_HYDRA_FLAGS_WITH_VALUE = {"--cfg", "-c", "--package", "-p", "--config-path", "-cp", "--config-name", "-cn",
                           "--config-dir", "-cd", "--info", "-i", "--experimental-rerun"}


def known_choices(group: str) -> list[str]:
    """The config files of a Hydra group (`task`, `preset`)."""
    return sorted(p.stem for p in (CONF_DIR / group).glob("*.yaml"))


def _first_line(err: BaseException) -> str:
    text = str(err).strip()
    return text.splitlines()[0] if text else type(err).__name__


def compose_config(overrides: list[str]) -> DictConfig:
    """The composed config for `overrides`; hydra's errors become one-line `ConfigError`s."""
    for ov in overrides:
        key, _, value = ov.partition("=")
        key = key.lstrip("+~")
        if key in ("task", "preset") and value not in known_choices(key):
            raise ConfigError(f"unknown {key} {value!r} (override {ov}); use one of {', '.join(known_choices(key))}")
    GlobalHydra.instance().clear()
    try:
        with initialize_config_dir(config_dir=str(CONF_DIR), version_base="1.3"):
            return compose(config_name="config", overrides=overrides)
    except DoktraError:
        raise
    except Exception as err:  # noqa: BLE001 - hydra/omegaconf errors: one line, never a traceback
        msg = _first_line(err)
        if msg.startswith("Could not override '"):
            key = msg.split("'")[1]
            raise ConfigError(
                f"unknown config key {key!r} (override {next((o for o in overrides if key in o), key)}); "
                "list the keys with `python -m doktra_tune.search --cfg job` or add a new one with +key=value"
            ) from err
        raise ConfigError(
            f"bad override ({msg}); check the key against `python -m doktra_tune.search --cfg job` "
            "(new keys need a leading +)"
        ) from err
    finally:
        GlobalHydra.instance().clear()


def split_argv(argv: list[str]) -> list[str]:
    """The overrides of a command line (Hydra's flags and their values left out)."""
    overrides: list[str] = []
    skip = False
    for arg in argv:
        if skip:
            skip = False
        elif arg.startswith("-"):
            skip = arg in _HYDRA_FLAGS_WITH_VALUE
        else:
            overrides.append(arg)
    return overrides


def _fail(err: DoktraError) -> None:
    print(f"error: {err}", file=sys.stderr, flush=True)
    sys.exit(err.exit_code)


@hydra.main(version_base="1.3", config_path=str(CONF_DIR), config_name="config")
def hydra_main(cfg: DictConfig) -> None:
    """Hydra entry: run the search for the composed config."""
    # Imported here, not at the top: the driver loads Ray, torch and MLflow (seconds), which
    # `--help`, `--cfg job` and a mistyped override never need.
    from doktra_tune.search.driver import run_search

    try:
        run_search(cfg, overrides=list(HydraConfig.get().overrides.task))
    except DoktraError as err:
        _fail(err)
    except KeyboardInterrupt:
        print("error: interrupted; re-run the same command to resume", file=sys.stderr, flush=True)
        sys.exit(130)


def main(argv: list[str] | None = None) -> None:
    """`python -m doktra_tune.search [overrides]`: check the overrides, then hand over to Hydra."""
    argv = list(sys.argv[1:] if argv is None else argv)
    try:
        compose_config(split_argv(argv))
    except DoktraError as err:
        _fail(err)
    sys.argv = [sys.argv[0], *argv]
    hydra_main()
