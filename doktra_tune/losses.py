"""Training losses of DoKTra (paper §3.2–3.3) and the KL-divergence ablation (Table 6).

All functions take raw logits / [CLS] vectors as torch tensors and return float32 torch tensors
(inputs are upcast, so bf16 autocast is safe) on the inputs' device. Shapes: logits [B, L]; single-label targets long [B];
multi-label (HoC) targets float multi-hot [B, L]; [CLS] vectors [B, H].

Multi-label convention (HoC, sigmoid outputs): every output is an independent Bernoulli decision.
The cross-entropy is BCE-with-logits averaged over the outputs (as Hugging Face's
``problem_type="multi_label_classification"`` loss), and the entropy term of Eq. 2 is the Bernoulli
entropy averaged over the outputs in the same way, so beta has the same scale as for single-label tasks.
HoC has two heads (``doktra_tune.tasks``): "sigmoid10", one output per hallmark, and "pairs20" (``pairs=True``),
the authors' 20 outputs ``<i>_0``, ``<i>_1`` (indices 2i, 2i+1) whose targets ``pair_targets`` builds from the
hallmark multi-hot; the same two averages then run over the 20 outputs (`confidence_penalty_loss`).
"""

from __future__ import annotations

import math
from typing import Literal

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from doktra_tune.config import LINEAR_PROJECTIONS
from doktra_tune.config import LinearProjection as ProjectionMode
from doktra_tune.errors import ConfigError, NonFiniteLossError

ABNormalizer = Literal["authors", "per_example"]

# Authors' code (DMCB-GIST/DoKTra, ABD/*_DoKTra_cpl.py): `criterion_alternative_L2(...) / 1000`,
# then `/ batch_size`.
AUTHORS_AB_SCALE = 1000.0
PROJECTION_BIAS = 0.01  # authors' init_weights: m.bias.data.fill_(0.01)


def _bernoulli_entropy(logits: Tensor) -> Tensor:
    """Element-wise entropy (nats) of Bernoulli(sigmoid(logits)), computed stably."""
    p = torch.sigmoid(logits)
    return -(p * F.logsigmoid(logits) + (1.0 - p) * F.logsigmoid(-logits))


def entropy(logits: Tensor, multi_label: bool = False) -> Tensor:
    """Eq. 1: H(p(y|x)) = -sum_i p_i log p_i, one value per example (shape [B], nats).

    Single-label: p = softmax(logits). Multi-label: the sum over labels of the Bernoulli entropies
    of sigmoid(logits) (the entropy of the factorised label distribution).
    """
    logits = logits.float()
    if multi_label:
        return _bernoulli_entropy(logits).sum(dim=-1)
    log_p = F.log_softmax(logits, dim=-1)
    return -(log_p.exp() * log_p).sum(dim=-1)


def pair_targets(labels: Tensor) -> Tensor:
    """The pairs20 targets of a multi-hot [B, L]: [B, 2L] with column 2i = 1 - y_i (`<i>_0`) and
    2i+1 = y_i (`<i>_1`), so exactly one of each pair is 1 -- the authors' multi-hot over their label
    list `[f"{i}_{v}" for i in range(10) for v in (0, 1)]` (CTT/BioBERT_ft_cpl.py, `preprocessing`)."""
    y = (labels.float() > 0.5).float()
    return torch.stack((1.0 - y, y), dim=-1).flatten(start_dim=-2)


def labels_from_pair_targets(targets: Tensor) -> Tensor:
    """The hallmark multi-hot [B, L] of pairs20 targets [B, 2L] (the `<i>_1` columns); ValueError
    unless exactly one of every pair is 1 (the inverse of `pair_targets`)."""
    t = targets.float()
    if t.shape[-1] % 2:
        raise ValueError(f"pair targets need an even number of columns, got {t.shape[-1]}")
    zeros, ones = t[..., 0::2], t[..., 1::2]
    if not bool((((zeros > 0.5) ^ (ones > 0.5))).all()):
        raise ValueError("every <i>_0/<i>_1 pair of the targets must hold exactly one 1")
    return (ones > 0.5).float()


def label_probabilities(logits: Tensor, multi_label: bool = False, pairs: bool = False) -> Tensor:
    """Per-label probabilities [B, L] of a classifier's logits, what the metrics and ECE read.

    Single-label: softmax. Multi-label (sigmoid10): sigmoid per label, decided at p >= 0.5.
    pairs20 (``pairs=True``, logits [B, 2L]): with s0 = sigmoid(z_{i,0}) and s1 = sigmoid(z_{i,1}), the
    pair renormalised, q_i = s1 / (s0 + s1) (computed as sigmoid(log s1 - log s0)). q_i >= 0.5 exactly
    when z_{i,1} >= z_{i,0}: the decision is the per-pair comparison of bluebert's `metric_fn`
    (argmax over each `<i>_0`, `<i>_1` pair), and when the two outputs agree (s0 = 1 - s1) q_i is s1
    itself, so ECE's confidence max(q, 1 - q) is the one sigmoid10 uses. (An exact tie counts as
    present here, as sigmoid10's p = 0.5 does; the argmax would pick `_0`.)
    """
    logits = logits.float()
    if pairs:
        if logits.shape[-1] % 2:
            raise ValueError(f"pairs20 logits need an even width, got {logits.shape[-1]}")
        return torch.sigmoid(F.logsigmoid(logits[..., 1::2]) - F.logsigmoid(logits[..., 0::2]))
    if multi_label:
        return torch.sigmoid(logits)
    return torch.softmax(logits, dim=-1)


def confidence_penalty_loss(
    logits: Tensor, targets: Tensor, beta: float, multi_label: bool = False, pairs: bool = False
) -> Tensor:
    """Eq. 2: L_cls = mean over the batch of (L_CE - beta * H(p(y|x))) (Pereyra et al., 2017).

    Single-label: per-example softmax cross-entropy minus beta * Eq. 1 entropy, averaged — the
    authors' `torch.mean(loss_ce - beta * negative_entropy)`. beta = 0 is plain cross-entropy.
    Multi-label (HoC sigmoid10, logits [B, L]): mean over examples and labels of
    (BCE-with-logits - beta * Bernoulli entropy), i.e. both terms averaged over labels (see the module
    docstring).
    HoC pairs20 (``pairs=True``: logits [B, 2L], ``targets`` the hallmark multi-hot [B, L]): the same
    over the 20 outputs against ``pair_targets(targets)``. At beta = 0 this is exactly the loss the
    authors' HoC configuration gives: Hugging Face's BCEWithLogitsLoss (mean over examples and the 20
    outputs) under ``num_labels=20, problem_type="multi_label_classification"`` with float labels,
    which their student fine-tuning scripts (ABD/BioMed_*_ft.py) train on as ``outputs['loss']``.
    Their Eq. 2 code (CTT/BioBERT_ft_cpl.py, the refinement of ABD/*_DoKTra_cpl.py) has no HoC branch:
    a softmax cross-entropy and softmax entropy over ``len(label_list_dict[task])`` classes, a dict
    without "hoc". So the entropy over the 20 outputs is ours: H is taken per output as a Bernoulli
    entropy, the factorised distribution the BCE trains, and averaged like the BCE (Eq. 1 summed over
    independent outputs, divided by their number, as sigmoid10 does over its 10); each hallmark thus
    enters twice, through its `_0` and its `_1` output.
    """
    logits = logits.float()
    if pairs:
        targets = pair_targets(targets)
        multi_label = True
    if multi_label:
        bce = F.binary_cross_entropy_with_logits(logits, targets.float(), reduction="none")
        return (bce - beta * _bernoulli_entropy(logits)).mean()
    ce = F.cross_entropy(logits, targets.long(), reduction="none")
    return (ce - beta * entropy(logits)).mean()


def activation_boundary_loss(
    student_cls: Tensor,
    teacher_cls: Tensor,
    margin: float = 1.0,
    normalizer: ABNormalizer = "authors",
) -> Tensor:
    """Eq. 5: the hinge-like activation-transfer loss of Heo et al. (2019), sigma = ReLU.

    Per element, with s = student and t = (projected) teacher [CLS]:
      t > 0  (rho(t) = 1): relu(mu - s)^2   = (s - mu)^2 if s <= mu   else 0
      t <= 0 (rho(t) = 0): relu(mu + s)^2   = (s + mu)^2 if s > -mu   else 0
    which is exactly the authors' `criterion_alternative_L2` (values at s = +-mu are 0 either way).

    Normalisation — paper vs code: Eq. 5 is a squared L2 norm per example; the authors' code sums
    over the whole batch and divides by 1000 and by the batch size. normalizer="authors" (default)
    reproduces the code: sum / 1000 / B, with B the actual batch size (the code uses the configured
    batch size, which differs only on a last, smaller batch). normalizer="per_example" is Eq. 5
    averaged over the batch: sum / B.
    """
    if student_cls.shape != teacher_cls.shape:
        raise ValueError(
            f"student [CLS] {tuple(student_cls.shape)} and teacher [CLS] "
            f"{tuple(teacher_cls.shape)} differ; project the teacher with TeacherProjection first"
        )
    s = student_cls.float()  # fp32 even under bf16 autocast: a sum over B * H squares
    t = teacher_cls.float()
    inactive = ((s > -margin) & (t <= 0)).to(s.dtype)
    active = ((s <= margin) & (t > 0)).to(s.dtype)
    per_element = (s + margin) ** 2 * inactive + (s - margin) ** 2 * active
    batch = max(int(s.shape[0]), 1)
    total = per_element.sum() / batch
    if normalizer == "authors":
        return total / AUTHORS_AB_SCALE
    if normalizer == "per_example":
        return total
    raise ValueError(f"unknown normalizer {normalizer!r}; use 'authors' or 'per_example'")


def activation_transfer_count(student_cls: Tensor, teacher_cls: Tensor) -> Tensor:
    """Eq. 4: L_AT = ||rho(T) - rho(S)||_1, the number of [CLS] units whose sign differs.

    Returns a float tensor [B] (one count per example); its mean is the authors' "intuitive loss"
    (e.g. 500 for an ALBERT-xlarge student means 500 of 2,048 units disagree, §4.5).
    """
    with torch.no_grad():
        return ((student_cls > 0) ^ (teacher_cls > 0)).sum(dim=-1).to(torch.float32)


def kd_kl_loss(
    student_logits: Tensor,
    teacher_logits: Tensor,
    temperature: float = 1.0,
    multi_label: bool = False,
) -> Tensor:
    """Hinton et al. (2015) KD loss, Table 6's "KLD" distillation: T^2 * KL(p_T^tau || p_S^tau).

    Single-label: softmax at temperature T, KL summed over classes and averaged over the batch.
    Multi-label: per-label Bernoulli KL between sigmoid(z_T / T) and sigmoid(z_S / T), averaged over
    examples and labels (the same averaging as the multi-label cross-entropy). The teacher side is
    detached. Zero when the logits are equal.
    """
    if temperature <= 0:
        raise ValueError(f"temperature must be > 0, got {temperature}")
    zs = student_logits.float() / temperature
    zt = teacher_logits.detach().float() / temperature
    if multi_label:
        pt = torch.sigmoid(zt)
        kl = pt * (F.logsigmoid(zt) - F.logsigmoid(zs)) + (1.0 - pt) * (
            F.logsigmoid(-zt) - F.logsigmoid(-zs)
        )
        return kl.mean() * temperature**2
    log_ps = F.log_softmax(zs, dim=-1)
    log_pt = F.log_softmax(zt, dim=-1)
    kl = (log_pt.exp() * (log_pt - log_ps)).sum(dim=-1)
    return kl.mean() * temperature**2


class TeacherProjection(nn.Module):
    """Maps teacher [CLS] (teacher_dim) to the student's width (student_dim) before Eq. 4/5 (§4.2).

    As the authors' `expander_model` (nn.Linear(768, 2048), xavier_uniform_ weight, bias 0.01,
    applied under no_grad). Whether a map is used at all is `resolve_projection`'s decision: the
    authors use none when the widths are equal (their RoBERTa-base financial student).

    mode="fixed_random": the seeded random map above, frozen (requires_grad False, applied under
    no_grad). mode="learned": same initialisation, trainable (give its parameters to the optimiser).

    Seeding: the weight is drawn from a local torch.Generator seeded with `seed` (the run's seed,
    as the authors' torch.manual_seed(args.random_seed)), so building a projection neither reads
    nor disturbs the global RNG. The authors draw from the global RNG (after nn.Linear's own
    default init), so the distribution is the same (Xavier-uniform) but the exact values differ.
    """

    def __init__(
        self, teacher_dim: int, student_dim: int, mode: ProjectionMode = "fixed_random", seed: int = 0
    ) -> None:
        super().__init__()
        if mode not in LINEAR_PROJECTIONS:
            raise ValueError(f"unknown projection mode {mode!r}; use one of {', '.join(LINEAR_PROJECTIONS)}")
        if teacher_dim <= 0 or student_dim <= 0:
            raise ValueError(f"projection dims must be positive, got {teacher_dim} -> {student_dim}")
        self.mode: ProjectionMode = mode
        self.seed = int(seed)
        # built on the meta device and filled below: nn.Linear's default init would draw from
        # the global RNG
        self.linear = nn.Linear(teacher_dim, student_dim, device="meta").to_empty(device="cpu")
        generator = torch.Generator(device="cpu")
        generator.manual_seed(self.seed)
        with torch.no_grad():
            weight = torch.empty(student_dim, teacher_dim)
            nn.init.xavier_uniform_(weight, generator=generator)
            self.linear.weight.copy_(weight)
            self.linear.bias.fill_(PROJECTION_BIAS)
        if mode == "fixed_random":
            self.linear.requires_grad_(False)

    @property
    def trainable(self) -> bool:
        return self.mode == "learned"

    def forward(self, teacher_cls: Tensor) -> Tensor:
        x = teacher_cls.to(self.linear.weight.dtype)
        if self.mode == "fixed_random":
            with torch.no_grad():
                return self.linear(x)
        return self.linear(x)


def resolve_projection(projection: str, teacher_dim: int, student_dim: int) -> str:
    """The map a run uses: "auto" is "identity" for equal widths, else "fixed_random";
    "identity" with different widths is a one-line ConfigError."""
    if projection == "auto":
        return "identity" if teacher_dim == student_dim else "fixed_random"
    if projection == "identity" and teacher_dim != student_dim:
        raise ConfigError(
            f"projection=identity needs equal teacher and student widths, got {teacher_dim} and {student_dim}; "
            "use projection=auto or fixed_random"
        )
    return projection


def check_finite(loss: Tensor, what: str = "loss") -> Tensor:
    """Return `loss` unchanged, or raise NonFiniteLossError if any element is NaN or inf."""
    if not bool(torch.isfinite(loss.detach()).all()):
        value = loss.detach().float().flatten()[:1].item() if loss.numel() else math.nan
        raise NonFiniteLossError(
            f"{what} became non-finite ({value}); lower the learning rate or use fp32 precision"
        )
    return loss
