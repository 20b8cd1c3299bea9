"""Evaluation attacks (spec §8): budget, strength, ε = 0, AutoAttack wrapper, simplex attack."""

import pytest
import torch
import torch.nn.functional as F
from eval_support import fitted_classifier, fitted_data, random_classifier, single_thread  # noqa: F401 (autouse fixture)

from advsimplex.alignment import sample_simplex_points
from advsimplex.attack import pgd_trajectory
from advsimplex.evaluation import ATTACKS, AttackSettings, autoattack, autoattack_attacks, run_attack
from advsimplex.evaluation.simplex import simplex_attack

FAST = AttackSettings(pgd_steps=10, cw_steps=10, aa_iters=10, simplex_steps=5, simplex_samples=4)


@pytest.fixture(scope="module")
def fitted():
    clf = fitted_classifier()
    x, y, _ = fitted_data()
    return clf, x, y


@pytest.fixture(scope="module")
def source():
    return random_classifier(seed=5)


class FirstTwoClasses(torch.nn.Module):
    """A binary task: the logits of the first two classes."""

    def __init__(self, clf):
        super().__init__()
        self.clf = clf

    def forward(self, pixels):
        return self.clf(pixels)[:, :2]


def accuracy(clf, x, y) -> float:
    with torch.no_grad():
        return (clf(x).argmax(dim=1) == y).float().mean().item()


def attack(name, clf, x, y, eps, source=None, seed=0, settings=FAST):
    return run_attack(name, clf, x, y, eps=eps, settings=settings, seed=seed, num_classes=4, source=source)


@pytest.mark.parametrize("name", ATTACKS)
def test_attacks_stay_in_ball_and_box(fitted, source, name):
    clf, x, y = fitted
    x = x[:12].clone()
    x[:, :, 0] = 0.0  # saturated rows: the [0, 1] box binds there, not the ball
    x[:, :, -1] = 1.0
    eps = 8 / 255
    adv = attack(name, clf, x, y[:12], eps, source=source)
    assert adv.shape == x.shape and adv.dtype == x.dtype
    assert (adv - x).abs().max().item() <= eps + 1e-6
    assert adv.min().item() >= 0.0 and adv.max().item() <= 1.0
    assert not torch.equal(adv, x)  # it did move


@pytest.mark.parametrize("name", ATTACKS)
def test_eps_zero_returns_the_clean_images(fitted, source, name):
    clf, x, y = fitted
    adv = attack(name, clf, x[:8], y[:8], 0.0, source=source)
    assert torch.equal(adv, x[:8])


def test_pgd_drives_the_fitted_model_to_zero(fitted):
    clf, x, y = fitted
    clean = accuracy(clf, x, y)
    assert clean >= 0.9, f"the fitted micro model should classify its images (clean accuracy {clean:.2f})"
    strong = AttackSettings(pgd_steps=20)
    robust = {eps: accuracy(clf, attack("pgd", clf, x, y, eps, settings=strong), y) for eps in (1 / 255, 32 / 255)}
    assert robust[32 / 255] <= 0.05
    assert robust[1 / 255] >= robust[32 / 255]


def test_autoattack_on_the_tiny_model(fitted):
    clf, x, y = fitted
    assert autoattack_attacks(4) == ["apgd-ce", "apgd-t"]
    state = torch.get_rng_state()
    adv = autoattack(clf, x, y, eps=4 / 255, num_classes=4, iters=10, seed=7)
    assert torch.equal(torch.get_rng_state(), state)  # the package reseeds the global RNG: restored
    assert (adv - x).abs().max().item() <= 4 / 255 + 1e-6 and 0 <= adv.min() and adv.max() <= 1
    clean, robust = accuracy(clf, x, y), accuracy(clf, adv, y)
    assert robust < clean
    # points AutoAttack could not flip are returned unchanged; the flipped ones are misclassified
    with torch.no_grad():
        flipped = clf(adv).argmax(dim=1) != y
    assert torch.equal(adv[~flipped], x[~flipped])
    again = autoattack(clf, x, y, eps=4 / 255, num_classes=4, iters=10, seed=7)
    assert torch.equal(adv, again)


def test_autoattack_binary_task_runs_apgd_ce_alone(fitted):
    clf, x, y = fitted
    assert autoattack_attacks(2) == ["apgd-ce"] and autoattack_attacks(3) == ["apgd-ce"]
    binary = FirstTwoClasses(clf)
    keep = y < 2
    xb, yb = x[keep], y[keep]
    adv = autoattack(binary, xb, yb, eps=8 / 255, num_classes=2, iters=10, seed=0)
    assert (adv - xb).abs().max().item() <= 8 / 255 + 1e-6
    assert FAST.describe("autoattack", 8 / 255, 2)["components"] == ["apgd-ce"]
    assert FAST.describe("autoattack", 8 / 255, 2)["target_classes"] == 0
    with pytest.raises(ValueError, match="at least 2 classes"):
        autoattack_attacks(1)


def test_simplex_attack_keeps_the_worst_sampled_point(fitted):
    clf, x, y = fitted
    x, y = x[:6], y[:6]
    eps, alpha, steps, samples = 8 / 255, 4 / 255, 5, 7
    adv = simplex_attack(clf, x, y, eps=eps, alpha=alpha, steps=steps, samples=samples,
                         generator=torch.Generator().manual_seed(11))  # fmt: skip
    # brute force with the same random stream: trajectory, then all points at once
    gen = torch.Generator().manual_seed(11)
    path = pgd_trajectory(clf, x, y, eps=eps, alpha=alpha, steps=steps, generator=gen)
    points = sample_simplex_points(path.deltas, 3, samples, gen).flatten(1, 2)  # (B, S·κ, 3, 8, 8)
    assert points.shape[1] == (steps - 1) * samples
    with torch.no_grad():
        ce = torch.stack(
            [F.cross_entropy(clf(x + points[:, j]), y, reduction="none") for j in range(points.shape[1])], 1
        )
        best = ce.max(dim=1).values
        got = F.cross_entropy(clf(adv), y, reduction="none")
    torch.testing.assert_close(got, best, rtol=1e-5, atol=1e-5)
    assert (got >= ce.min(dim=1).values).all()


def test_simplex_transfer_from_the_model_itself_is_the_simplex_attack(fitted, source):
    clf, x, y = fitted
    white = attack("simplex", clf, x[:8], y[:8], 4 / 255, seed=3)
    self_transfer = attack("simplex-transfer", clf, x[:8], y[:8], 4 / 255, source=clf, seed=3)
    assert torch.equal(white, self_transfer)
    other = attack("simplex-transfer", clf, x[:8], y[:8], 4 / 255, source=source, seed=3)
    assert not torch.equal(white, other)


def test_attack_errors(fitted):
    clf, x, y = fitted
    with pytest.raises(ValueError, match="unknown attack 'fgsm'"):
        attack("fgsm", clf, x, y, 1 / 255)
    with pytest.raises(ValueError, match="needs a source model"):
        attack("simplex-transfer", clf, x, y, 1 / 255)
    with pytest.raises(ValueError, match="eps must lie in"):
        attack("pgd", clf, x, y, -1 / 255)
    with pytest.raises(ValueError, match="eps must lie in"):
        attack("simplex", clf, x, y, 2.0)


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [({"pgd_steps": 0}, "pgd_steps must be a positive int"), ({"aa_iters": 2.5}, "aa_iters must be a positive int"),
     ({"pgd_alpha": 0.0}, r"pgd_alpha must lie in \(0, 1\]"), ({"simplex_order": 5}, "simplex_order must be 3"),
     ({"simplex_steps": 1}, "simplex_steps must be >= simplex_order - 1"),
     ({"simplex_init_std": -1.0}, "simplex_init_std must be >= 0")],
)  # fmt: skip
def test_settings_validation(kwargs, match):
    with pytest.raises(ValueError, match=match):
        AttackSettings(**kwargs).validate()


@pytest.mark.gpu
@pytest.mark.parametrize("name", ATTACKS)
def test_attacks_on_cuda(fitted, source, name):
    clf, x, y = fitted
    clf, x, y = clf.to("cuda"), x[:12].to("cuda"), y[:12].to("cuda")
    src = source.to("cuda")
    cuda_state = torch.cuda.get_rng_state()
    try:
        adv = attack(name, clf, x, y, 8 / 255, source=src)
        assert adv.device.type == "cuda" and adv.shape == x.shape
        assert (adv - x).abs().max().item() <= 8 / 255 + 1e-6 and adv.min() >= 0 and adv.max() <= 1
        assert torch.equal(torch.cuda.get_rng_state(), cuda_state)  # AutoAttack's reseeding is undone
        again = attack(name, clf, x, y, 8 / 255, source=src)
        assert accuracy(clf, again, y) == accuracy(clf, adv, y)
    finally:  # the fixtures are shared with the CPU tests
        clf.to("cpu")
        src.to("cpu")
