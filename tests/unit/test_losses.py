"""Hand-computed checks of the DoKTra losses (Eq. 1, 2, 4, 5; Table 6 KLD; the projection)."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

from doktra_tune.errors import ConfigError, NonFiniteLossError
from doktra_tune.losses import (
    TeacherProjection,
    activation_boundary_loss,
    activation_transfer_count,
    check_finite,
    confidence_penalty_loss,
    entropy,
    kd_kl_loss,
    resolve_projection,
)

LN3 = math.log(3.0)
# softmax([0, ln 3]) = [1/4, 3/4]
H_QUARTER = -(0.25 * math.log(0.25) + 0.75 * math.log(0.75))  # 0.5623351446


def test_entropy_of_uniform_is_log_k() -> None:
    h = entropy(torch.zeros(2, 4))
    assert h.shape == (2,)
    assert torch.allclose(h, torch.full((2,), math.log(4.0)))


def test_entropy_hand_value_and_multi_label_sum_of_bernoullis() -> None:
    h = entropy(torch.tensor([[0.0, LN3]]))
    assert h.item() == pytest.approx(H_QUARTER, abs=1e-6)
    # sigmoid(0) = 1/2 for each of 3 labels: 3 * ln 2
    assert entropy(torch.zeros(1, 3), multi_label=True).item() == pytest.approx(3 * math.log(2.0), abs=1e-6)
    # sigmoid(ln 3) = 3/4: same Bernoulli entropy as the [1/4, 3/4] softmax above
    hm = entropy(torch.tensor([[LN3]]), multi_label=True)
    assert hm.item() == pytest.approx(H_QUARTER, abs=1e-6)


def test_entropy_is_stable_for_huge_logits() -> None:
    h = entropy(torch.tensor([[1000.0, -1000.0]]))
    hm = entropy(torch.tensor([[1000.0, -1000.0]]), multi_label=True)
    assert torch.isfinite(h).all() and torch.isfinite(hm).all()
    assert h.item() == pytest.approx(0.0, abs=1e-6) and hm.item() == pytest.approx(0.0, abs=1e-6)


def test_cpl_with_beta_zero_is_cross_entropy() -> None:
    torch.manual_seed(0)
    logits = torch.randn(5, 6)
    targets = torch.tensor([0, 5, 2, 2, 1])
    assert torch.allclose(confidence_penalty_loss(logits, targets, 0.0), F.cross_entropy(logits, targets))
    multi_targets = (torch.rand(5, 6) > 0.5).float()
    assert torch.allclose(
        confidence_penalty_loss(logits, multi_targets, 0.0, multi_label=True),
        F.binary_cross_entropy_with_logits(logits, multi_targets),
    )


def test_cpl_hand_value() -> None:
    logits = torch.tensor([[0.0, LN3]])
    # CE = -ln(3/4) = 0.2876821; minus 0.5 * H = 0.2811676 -> 0.0065145
    loss = confidence_penalty_loss(logits, torch.tensor([1]), beta=0.5)
    assert loss.item() == pytest.approx(-math.log(0.75) - 0.5 * H_QUARTER, abs=1e-6)
    assert loss.item() == pytest.approx(0.0065145, abs=1e-6)
    # batch mean: second example (target 0): CE = -ln(1/4)
    loss2 = confidence_penalty_loss(logits.repeat(2, 1), torch.tensor([1, 0]), beta=0.5)
    expected = ((-math.log(0.75) - 0.5 * H_QUARTER) + (-math.log(0.25) - 0.5 * H_QUARTER)) / 2
    assert loss2.item() == pytest.approx(expected, abs=1e-6)


def test_cpl_multi_label_hand_value() -> None:
    # sigmoid(0) = 1/2: BCE = ln 2 per label, Bernoulli entropy = ln 2 per label -> beta=1 gives 0
    logits = torch.zeros(1, 2)
    targets = torch.tensor([[1.0, 0.0]])
    assert confidence_penalty_loss(logits, targets, 1.0, multi_label=True).item() == pytest.approx(0.0, abs=1e-7)
    assert confidence_penalty_loss(logits, targets, 0.5, multi_label=True).item() == pytest.approx(
        0.5 * math.log(2.0), abs=1e-6
    )


def _authors_criterion(source: torch.Tensor, target: torch.Tensor, margin: float) -> torch.Tensor:
    """criterion_alternative_L2 of DMCB-GIST/DoKTra, as written there."""
    loss = (source + margin) ** 2 * ((source > -margin) & (target <= 0)).float() + (
        source - margin
    ) ** 2 * ((source <= margin) & (target > 0)).float()
    return torch.abs(loss).sum()


def test_activation_boundary_margin_boundaries() -> None:
    s = torch.tensor([[-1.0, 1.0, 0.5, -0.5, 2.0, -2.0]])
    t = torch.tensor([[0.0, 1.0, 0.0, 1.0, -1.0, 1.0]])
    # s=-mu, t=0 (inactive): 0 | s=mu, t>0: 0 | s=.5, t exactly 0 counts as inactive: 1.5^2
    # s=-.5, t>0: 1.5^2 | s=2, t<0: 3^2 | s=-2, t>0: 3^2  -> 22.5
    assert activation_boundary_loss(s, t, 1.0, normalizer="per_example").item() == pytest.approx(22.5)
    assert activation_boundary_loss(s, t, 1.0).item() == pytest.approx(0.0225)
    # batch of 2: the second row (s = 0, t = 0) adds 6 * 1^2; authors: sum / 1000 / B
    s2 = torch.cat([s, torch.zeros(1, 6)])
    t2 = torch.cat([t, torch.zeros(1, 6)])
    assert activation_boundary_loss(s2, t2, 1.0).item() == pytest.approx(28.5 / 1000 / 2)
    assert activation_boundary_loss(s2, t2, 1.0).item() == pytest.approx(
        (_authors_criterion(s2, t2, 1.0) / 1000 / 2).item()
    )


def test_activation_boundary_margin_and_gradient() -> None:
    # margin 0.5: s = 0.5 with t > 0 is exactly on the margin -> 0; s = -0.5, t <= 0 -> 0
    s = torch.tensor([[0.5, -0.5, 0.0, 0.0]], requires_grad=True)
    t = torch.tensor([[2.0, -2.0, 2.0, -2.0]])
    loss = activation_boundary_loss(s, t, 0.5, normalizer="per_example")
    assert loss.item() == pytest.approx(0.25 + 0.25)
    loss.backward()
    # d/ds (s - mu)^2 = 2(s - mu): 0 on the margins, -1 and +1 at s = 0
    assert torch.allclose(s.grad, torch.tensor([[0.0, 0.0, -1.0, 1.0]]))


def test_activation_boundary_matches_eq5_with_relu() -> None:
    torch.manual_seed(1)
    s, t = torch.randn(4, 16), torch.randn(4, 16)
    rho = (t > 0).float()
    eq5 = (rho * torch.relu(1.0 - s) + (1 - rho) * torch.relu(1.0 + s)).pow(2).sum(dim=1).mean()
    assert activation_boundary_loss(s, t, normalizer="per_example").item() == pytest.approx(eq5.item(), rel=1e-6)
    assert activation_boundary_loss(s, t).item() == pytest.approx(
        (_authors_criterion(s, t, 1.0) / 1000 / 4).item(), rel=1e-6
    )


def test_activation_boundary_rejects_mismatched_shapes() -> None:
    with pytest.raises(ValueError, match="TeacherProjection"):
        activation_boundary_loss(torch.zeros(2, 4), torch.zeros(2, 8))


def test_activation_transfer_count() -> None:
    s = torch.tensor([[1.0, -1.0, 0.0, 2.0], [0.0, 0.0, 0.0, 0.0], [1.0, 1.0, 1.0, 1.0]])
    t = torch.tensor([[1.0, 1.0, -1.0, 0.0], [0.0, -3.0, 0.0, 0.0], [-1.0, -1.0, -1.0, -1.0]])
    # row 1: signs (s>0) TFFT vs (t>0) TTFF -> 2; row 2: 0 is "not active" on both sides -> 0; row 3: 4
    counts = activation_transfer_count(s, t)
    assert counts.dtype == torch.float32
    assert counts.tolist() == [2.0, 0.0, 4.0]


def test_kd_kl_is_zero_for_equal_logits() -> None:
    torch.manual_seed(2)
    z = torch.randn(3, 5)
    assert kd_kl_loss(z, z.clone()).item() == pytest.approx(0.0, abs=1e-6)
    assert kd_kl_loss(z, z.clone(), temperature=3.0).item() == pytest.approx(0.0, abs=1e-6)
    assert kd_kl_loss(z, z.clone(), multi_label=True).item() == pytest.approx(0.0, abs=1e-6)


def test_kd_kl_hand_values() -> None:
    student = torch.tensor([[0.0, 0.0]])
    teacher = torch.tensor([[0.0, LN3]])
    # KL([1/4, 3/4] || [1/2, 1/2]) = 1/4 ln(1/2) + 3/4 ln(3/2) = 0.1308120
    assert kd_kl_loss(student, teacher).item() == pytest.approx(0.1308120, abs=1e-6)
    # T = 2: teacher softmax([0, ln3 / 2]) = [1, sqrt 3] / (1 + sqrt 3); times T^2 = 4
    a = 1 / (1 + math.sqrt(3.0))
    expected = 4 * (a * math.log(2 * a) + (1 - a) * math.log(2 * (1 - a)))
    assert kd_kl_loss(student, teacher, temperature=2.0).item() == pytest.approx(expected, abs=1e-6)
    # multi-label: Bernoulli(1/2) || Bernoulli(3/4) = 1/2 ln(2/3) + 1/2 ln 2 = 1/2 ln(4/3)
    ml = kd_kl_loss(torch.tensor([[LN3]]), torch.tensor([[0.0]]), multi_label=True)
    assert ml.item() == pytest.approx(0.5 * math.log(4 / 3), abs=1e-6)


def test_kd_kl_gradient_reaches_student_only() -> None:
    student = torch.tensor([[0.0, 0.0]], requires_grad=True)
    teacher = torch.tensor([[0.0, LN3]], requires_grad=True)
    kd_kl_loss(student, teacher).backward()
    assert student.grad is not None and teacher.grad is None
    # d KL / d z_s = p_s - p_t = [1/2 - 1/4, 1/2 - 3/4]
    assert torch.allclose(student.grad, torch.tensor([[0.25, -0.25]]), atol=1e-6)


def test_projection_is_seeded_frozen_and_leaves_global_rng_alone() -> None:
    torch.manual_seed(123)
    state = torch.get_rng_state()
    p1 = TeacherProjection(8, 12, seed=7)
    assert torch.equal(torch.get_rng_state(), state)
    p2 = TeacherProjection(8, 12, seed=7)
    p3 = TeacherProjection(8, 12, seed=8)
    assert torch.equal(p1.linear.weight, p2.linear.weight)
    assert not torch.equal(p1.linear.weight, p3.linear.weight)
    assert torch.allclose(p1.linear.bias, torch.full((12,), 0.01))
    bound = math.sqrt(6.0 / (8 + 12))  # Xavier-uniform limit
    assert p1.linear.weight.abs().max().item() <= bound
    assert p1.linear.weight.shape == (12, 8)
    assert all(not p.requires_grad for p in p1.parameters())
    x = torch.randn(3, 8, requires_grad=True)
    y = p1(x)
    assert y.shape == (3, 12) and not y.requires_grad
    assert torch.allclose(y, x.detach() @ p1.linear.weight.T + 0.01, atol=1e-6)


def test_projection_auto_is_identity_for_equal_widths_and_learned_mode_trains() -> None:
    """§4.2 projects the teacher only because the widths differ; the authors' RoBERTa-base financial
    student (768 = FinBERT's 768) uses no map. auto follows that; fixed_random forces the map."""
    assert resolve_projection("auto", 768, 768) == "identity"
    assert resolve_projection("auto", 768, 2048) == "fixed_random"
    assert resolve_projection("fixed_random", 6, 6) == "fixed_random"  # forced
    with pytest.raises(ConfigError, match="projection=identity needs equal teacher and student widths"):
        resolve_projection("identity", 768, 1024)
    same = TeacherProjection(6, 6, seed=0)  # the forced map is a real map, not the identity
    x = torch.randn(2, 6)
    assert not torch.allclose(same(x), x)
    learned = TeacherProjection(6, 4, mode="learned", seed=0)
    fixed = TeacherProjection(6, 4, mode="fixed_random", seed=0)
    assert torch.equal(learned.linear.weight, fixed.linear.weight)  # same initialisation
    assert learned.trainable and not fixed.trainable
    learned(x).sum().backward()
    assert learned.linear.weight.grad is not None
    with pytest.raises(ValueError, match="projection mode"):
        TeacherProjection(6, 4, mode="identity")  # type: ignore[arg-type]


def test_check_finite() -> None:
    ok = torch.tensor(1.5)
    assert check_finite(ok) is ok
    with pytest.raises(NonFiniteLossError, match="non-finite"):
        check_finite(torch.tensor(float("nan")), "train_loss")
    with pytest.raises(NonFiniteLossError):
        check_finite(torch.tensor([1.0, float("inf")]))


def test_losses_return_fp32_for_bf16_inputs() -> None:
    s = torch.tensor([[0.5, -0.5]], dtype=torch.bfloat16)
    t = torch.tensor([[1.0, 1.0]], dtype=torch.bfloat16)
    ab = activation_boundary_loss(s, t, normalizer="per_example")
    assert ab.dtype == torch.float32 and ab.item() == pytest.approx(0.25 + 2.25)
    logits = torch.tensor([[0.0, LN3]], dtype=torch.bfloat16)
    assert confidence_penalty_loss(logits, torch.tensor([1]), 0.0).dtype == torch.float32
    assert kd_kl_loss(logits, logits).dtype == torch.float32
