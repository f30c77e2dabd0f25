"""Ray Tune trainables for activation boundary distillation + refinement (Algorithm 1 lines 3-10).

`base` is a DistillConfig whose `model` is the fine-tuned student winner and whose
`teacher_checkpoint` is the CTT winner (both checkpoints on shared storage).

Shared prefix (`stages.abd.share_prefix`, doktra_tune.prefix): `abd_trunk_trainable` runs a grid's
activation-boundary phase once per trunk, publishing its checkpoint (training state included) at
every switch epoch the grid needs; `abd_trainable` given the prefix starts each grid point from its
trunk's checkpoint at its own switch and refines from there.
"""

from __future__ import annotations

from pathlib import Path

from doktra_tune.config import DistillConfig
from doktra_tune.prefix import SharedPrefix
from doktra_tune.run_spec import RunSpec
from doktra_tune.stages import distill
from trainables.inputs import wait_for_models
from trainables.sharing import Sharing
from trainables.trial import StageTrial


def abd_trainable(
    config: dict, base: DistillConfig, tracking: dict | None = None, publish_to: Path | None = None,
    prefix: SharedPrefix | None = None,
) -> None:
    """One ABD trial: `base` with `config` (e.g. {"lr": 1e-5, "beta": 0.5, "gamma": 0.9}) applied; with
    `prefix`, it starts from its trunk's checkpoint at its switch epoch (none when that is 0)."""
    spec = RunSpec.of_trial(config)
    start = prefix.start(spec.stage_config(base).to_dict()) if prefix is not None else None
    if start is not None:  # published by a trunk trial that completed, perhaps on another node
        wait_for_models([start])
    sharing = Sharing(prefix=start) if start is not None else None
    with StageTrial("abd", spec, base, tracking, publish_to=publish_to, sharing=sharing) as trial:
        trial.finish(distill(trial.stage_config, on_epoch=trial.on_epoch))


def abd_trunk_trainable(config: dict, base: DistillConfig, prefix: SharedPrefix, tracking: dict | None = None) -> None:
    """One trunk (`config`: `SharedPrefix.trunk_config`): the activation-boundary phase up to the grid's
    latest switch, its checkpoint of every switch epoch published under the trunk's directory."""
    spec = RunSpec.of_trial(config)
    trunk = spec.stage_config(base)
    directory = prefix.directory(trunk.to_dict())
    epochs = {k: directory / f"epoch_{k}" for k in prefix.switches(trunk.epochs)}
    with StageTrial("abd", spec, base, tracking, sharing=Sharing(publish_epochs=epochs)) as trial:
        trial.finish(distill(trial.stage_config, on_epoch=trial.on_epoch))
