"""Paths of a search, made absolute once and stored relative inside the run directory.

At plan time (`absolute_settings`) every path-like setting — `runs_root`, `data_root`, `cache_dir`,
a local model directory given as `teacher_model` / `student_model`, a user's grid file
(`stages.<stage>.search_space`), a `mlflow.tracking_uri` that is a file — is made absolute against
the driver's working directory (`~` expanded), so trials, which Ray starts in directories of their
own, read the same files. `cache_dir` keeps a leading `~`: the cache lives in the home of whichever
node a trial runs on. A setting with a URI scheme (`s3://`, `gs://`, ...) is refused in one line:
object storage is not supported yet.

Inside the run directory, what it refers to inside itself is stored relative to it
(`run_relative`: `stages/ctt/winner`), and resolved against it when read back (`run_absolute`), so
a run directory moved or mounted at another path resumes.
"""

from __future__ import annotations

import copy
import os
import re
import urllib.parse
import urllib.request
from pathlib import Path
from typing import Any

from doktra_tune.errors import ConfigError

# doktra_tune.models' spelling of model specs (not imported: it loads torch, and a plan needs none)
MINILM_SPEC = "minilm"
_TRUNCATE_RE = re.compile(r"^(?P<base>.+)@L(?P<layers>\d+)$")  # models.split_truncation: <spec>@L<n>
_SCHEME_RE = re.compile(r"^(?P<scheme>[A-Za-z][A-Za-z0-9+.\-]*)://")
_LOCAL_HOSTS = ("", "localhost")
_TRACKING_NAMES = ("databricks", "databricks-uc", "uc")  # MLflow tracking URIs without a colon that are no path
RUN_DIR_PARTS = ("stages", "final", "ray")  # the run directory's entries that its JSON files refer into


def absolute(path: str | Path, cwd: Path | None = None) -> Path:
    """`path` with `~` expanded, made absolute against `cwd` (default: the working directory) and
    normalised (`..` folded), symbolic links kept as written: each node resolves them itself."""
    expanded = Path(os.path.expanduser(str(path)))
    return Path(os.path.normpath(Path(cwd or os.getcwd()) / expanded))


def local_path(value: str, setting: str, cwd: Path | None = None, *, expand_home: bool = True) -> str:
    """The absolute local path a path setting names; `file:///p` is the path `/p`. A URI of any
    other scheme (object storage: s3://, gs://, abfs://, hdfs://, ...) is a one-line ConfigError.
    `expand_home=False` keeps a leading `~` (each node's own home)."""
    value = str(value).strip()
    match = _SCHEME_RE.match(value)
    if match is not None:
        parsed = urllib.parse.urlparse(value)
        if match["scheme"].lower() != "file":
            raise ConfigError(
                f"{setting}={value} is object storage, which doktra-tune does not support yet; mount it (or use "
                f"a shared file system such as NFS) and set {setting}=<its path>"
            )
        if parsed.netloc not in _LOCAL_HOSTS:
            raise ConfigError(
                f"{setting}={value} names a file on host {parsed.netloc}, not on this machine; mount it and set "
                f"{setting}=<its path>"
            )
        value = urllib.request.url2pathname(parsed.path)
    if not expand_home and (value == "~" or value.startswith("~/")):
        return os.path.normpath(value)
    return str(absolute(value, cwd))


def is_model_path(spec: str, cwd: Path | None = None) -> bool:
    """Whether a model spec names a local directory (as `doktra_tune.models.resolve_model_source`
    reads it): it starts with `.`, `/` or `~`, or is a directory relative to `cwd`. `minilm`,
    `random:...` and hub ids (`org/name`) that are no directory here are no paths."""
    if not spec or spec == MINILM_SPEC or spec.startswith("random:"):
        return False
    return spec.startswith((".", "/", "~")) or (Path(cwd or os.getcwd()) / spec).is_dir()


def absolute_model_spec(spec: str, cwd: Path | None = None) -> str:
    """A model spec with its local directory made absolute (`./m@L3` -> `/abs/m@L3`); other specs as given."""
    spec = spec.strip()
    match = _TRUNCATE_RE.match(spec)
    base, suffix = (match["base"], spec[len(match["base"]):]) if match else (spec, "")
    return str(absolute(base, cwd)) + suffix if is_model_path(base, cwd) else spec


def absolute_tracking_uri(uri: str, cwd: Path | None = None) -> str:
    """A tracking URI whose file is given relative made absolute: `sqlite:///rel/mlflow.db` ->
    `sqlite:////abs/rel/mlflow.db`, a plain directory `mlruns` -> `/abs/mlruns`, `file:rel` -> a
    `file://` URI; servers (http, databricks, postgresql, ...) as given."""
    uri = str(uri).strip()
    if uri.startswith("sqlite:///"):
        rest = uri[len("sqlite:///"):]
        if not rest or rest.startswith("/") or rest == ":memory:":
            return uri
        return f"sqlite:///{absolute(rest, cwd)}"
    if uri.startswith("file:") and not uri.startswith("file://"):
        return absolute(uri[len("file:"):], cwd).as_uri()
    if ":" not in uri and uri not in _TRACKING_NAMES:
        return str(absolute(uri, cwd))
    return uri


def absolute_settings(raw: dict[str, Any], cwd: Path | None = None) -> dict[str, Any]:
    """A copy of the composed config `raw` whose path-like settings are absolute (module docstring).
    Idempotent: a config made absolute stays as it is."""
    out = copy.deepcopy(raw)
    out["runs_root"] = local_path(out.get("runs_root") or "runs", "runs_root", cwd)
    if out.get("data_root") not in (None, ""):
        out["data_root"] = local_path(out["data_root"], "data_root", cwd)
    if out.get("cache_dir") not in (None, ""):
        out["cache_dir"] = local_path(out["cache_dir"], "cache_dir", cwd, expand_home=False)
    for key in ("teacher_model", "student_model"):
        if isinstance(out.get(key), str):
            out[key] = absolute_model_spec(out[key], cwd)
    for name, stage in (out.get("stages") or {}).items():
        if isinstance(stage, dict) and stage.get("search_space") not in (None, ""):
            stage["search_space"] = local_path(stage["search_space"], f"stages.{name}.search_space", cwd)
    mlflow = out.get("mlflow")
    if isinstance(mlflow, dict) and mlflow.get("tracking_uri") not in (None, ""):
        mlflow["tracking_uri"] = absolute_tracking_uri(mlflow["tracking_uri"], cwd)
    return out


# ----------------------------------------------------------------------------- inside the run directory


def run_relative(value: Any, run_dir: Path) -> Any:
    """`value` (JSON-like) with every absolute path into `run_dir` (under one of `RUN_DIR_PARTS`)
    written relative to it: `/runs/<id>/stages/ctt/winner` -> `stages/ctt/winner`."""
    if isinstance(value, dict):
        return {k: run_relative(v, run_dir) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [run_relative(v, run_dir) for v in value]
    if isinstance(value, str) and os.path.isabs(value):
        try:
            rel = Path(os.path.normpath(value)).relative_to(absolute(run_dir))
        except ValueError:
            return value
        if rel.parts and rel.parts[0] in RUN_DIR_PARTS:
            return rel.as_posix()
    return value


def run_absolute(value: Any, run_dir: Path) -> Any:
    """The inverse of `run_relative`: every relative path into the run directory
    (`stages/...`, `final/...`, `ray/...`) resolved against `run_dir`, wherever it is now."""
    if isinstance(value, dict):
        return {k: run_absolute(v, run_dir) for k, v in value.items()}
    if isinstance(value, list):
        return [run_absolute(v, run_dir) for v in value]
    if isinstance(value, str) and "/" in value and not os.path.isabs(value):
        parts = Path(value).parts
        if parts[0] in RUN_DIR_PARTS and ".." not in parts:
            return str(absolute(run_dir) / value)
    return value
