"""The search's configuration composed from `doktra_tune/conf` (Hydra's compose API): what the CLI
runs and what the analysis compares a search with (`analysis.caveats`: the `paper` preset composed
for the same task). A leaf module: Hydra and OmegaConf only, so both can import it.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from hydra import compose, initialize_config_dir
from hydra.core.global_hydra import GlobalHydra
from hydra.errors import MissingConfigException
from omegaconf import DictConfig, OmegaConf

from doktra_tune.errors import ConfigError, DoktraError, first_line

CONF_DIR = Path(__file__).resolve().parent / "conf"


def known_choices(group: str) -> list[str]:
    """The config files of a Hydra group (`task`, `preset`)."""
    return sorted(p.stem for p in (CONF_DIR / group).glob("*.yaml"))


def unknown_choice(group: str, value: str, override: str) -> ConfigError:
    return ConfigError(f"unknown {group} {value!r} (override {override}); use one of {', '.join(known_choices(group))}")


def composition_error(err: Exception, overrides: list[str]) -> ConfigError:
    """Hydra's composition error for `overrides` as one line naming the override and the fix."""
    if isinstance(err, MissingConfigException) and err.missing_cfg_file and "/" in err.missing_cfg_file:
        group, _, value = err.missing_cfg_file.partition("/")
        return unknown_choice(group, value, next((o for o in overrides if o.lstrip("+~").startswith(f"{group}=")),
                                                 f"{group}={value}"))
    msg = first_line(err)
    if msg.startswith("Could not override '"):
        key = msg.split("'")[1]
        return ConfigError(
            f"unknown config key {key!r} (override {next((o for o in overrides if key in o), key)}); "
            "list the keys with `python -m doktra_tune.search --cfg job` or add a new one with +key=value"
        )
    if msg.startswith("Ambiguous value for argument '"):  # a sweep without -m
        override = msg.split("'")[1]
        return ConfigError(f"{override} sweeps over several values; add -m (--multirun) to run one search per "
                           "value (--help and --cfg show one config: give one value per key)")
    return ConfigError(
        f"bad override ({msg}); check the key against `python -m doktra_tune.search --cfg job` "
        "(new keys need a leading +)"
    )


def compose_config(overrides: list[str]) -> DictConfig:
    """The composed config for `overrides`; hydra's errors become one-line `ConfigError`s. Inside a
    running Hydra app (a multirun's checks) its config search path is used; else `CONF_DIR`'s."""
    for ov in overrides:
        key, _, value = ov.partition("=")
        key = key.lstrip("+~")
        if key in ("task", "preset") and value not in known_choices(key):
            raise unknown_choice(key, value, ov)
    running = GlobalHydra.instance().is_initialized()
    try:
        if running:
            return compose(config_name="config", overrides=overrides)
        with initialize_config_dir(config_dir=str(CONF_DIR), version_base="1.3"):
            return compose(config_name="config", overrides=overrides)
    except DoktraError:
        raise
    except Exception as err:  # noqa: BLE001 - hydra/omegaconf errors: one line, never a traceback
        raise composition_error(err, overrides) from err
    finally:
        if not running:
            GlobalHydra.instance().clear()


def resolved_dict(cfg: DictConfig | dict[str, Any]) -> dict[str, Any]:
    """The composed config as a plain dict (interpolations resolved, Hydra's own section dropped)."""
    if isinstance(cfg, DictConfig):
        try:
            cfg = OmegaConf.to_container(cfg, resolve=True)  # type: ignore[assignment]
        except Exception as err:  # noqa: BLE001 - interpolation errors from user overrides
            raise ConfigError(f"cannot resolve the configuration ({first_line(err)}); check the overrides") from err
    assert isinstance(cfg, dict)
    return {k: v for k, v in cfg.items() if k != "hydra"}
