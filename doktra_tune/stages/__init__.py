"""The DoKTra training stages (Algorithm 1) and checkpoint evaluation, one job per module:

* ``recipes`` -- ``train_teacher`` (Alg. 1 line 1), ``train_student`` (line 2), ``distill`` (lines 3-10);
* ``step_losses`` -- one step's loss: Eq. 2, Eq. 5, Table 6's KD; the gamma switch (``switch_epoch``);
* ``loop`` -- the epoch loop the three stages share: train, evaluate, save, report, prune;
* ``epoch`` -- one training epoch: AdamW, the linear schedule, seeds, the finiteness check;
* ``evaluation`` -- predictions and metrics on a split; ``evaluate_checkpoint``;
* ``teacher`` -- the frozen teacher's cached [CLS]/logits and their projection (Sec. 4.2);
* ``checkpointing`` -- epoch checkpoints: save, keep, resume;
* ``splits`` -- the examples and encodings of a stage's splits; ``state`` -- what a recipe hands the loop.

A stage's configuration (``doktra_tune.config``) checks itself when it is made.

The stages' public entry points are re-exported here.
"""

from doktra_tune.stages.evaluation import evaluate_checkpoint
from doktra_tune.stages.recipes import distill, train_student, train_teacher

__all__ = ["distill", "evaluate_checkpoint", "train_student", "train_teacher"]
