"""fdgpu.attacks: FGSM, PGD (L-inf/L2), EOT, BPDA; AutoAttack-style checks and torchattacks through the layer."""
import os
from pathlib import Path

import pytest
import torch
import torch.nn as nn

import fdgpu
from fdgpu.attacks import BPDA, eot, fgsm, pgd
from fdgpu.models import CIFAR10_MEAN, CIFAR10_STD, Normalize, cifar_resnet

REPO = Path(__file__).resolve().parents[1]
DATA = Path(os.environ.get("FDGPU_DATA", REPO.parent / "shared" / "data"))
MODELS = Path(os.environ.get("FDGPU_MODELS", REPO.parent / "shared" / "models"))
BACKWARDS = ("exact", "ste", "soft", "bpda")


def toy(seed=0):
    torch.manual_seed(seed)  # only to initialise the toy weights reproducibly
    return nn.Sequential(nn.Conv2d(3, 8, 3, padding=1), nn.ReLU(), nn.AdaptiveAvgPool2d(2), nn.Flatten(),
                         nn.Linear(32, 10)).eval()


def pretrained(defence=None):
    p = MODELS / "resnet20-cifar10.pt"
    if not p.is_file():
        pytest.skip(f"pretrained weights not found at {p} (set FDGPU_MODELS to the folder with resnet20-cifar10.pt; "
                    f"`fdgpu models fetch resnet20 --root DIR` downloads it)")
    layers = [Normalize(CIFAR10_MEAN, CIFAR10_STD), cifar_resnet(20, weights=p)]
    return nn.Sequential(*([defence] if defence is not None else []), *layers).eval()


def cifar(n):
    p = DATA / "cifar10" / "test.npz"
    if not p.is_file():
        pytest.skip(f"CIFAR-10 subset not found at {p} (set FDGPU_DATA to a folder holding cifar10/test.npz; "
                    f"`fdgpu data cifar10 --root DIR` downloads it)")
    from fdgpu.data import load_npz
    return load_npz(p, limit=n)


@pytest.fixture(autouse=True, scope="module")
def one_thread():
    # The CI/dev machines have 2 shared cores: one intra-op thread avoids OpenMP oversubscription stalls (measured
    # here: the sanity-property test took 157 s with 2 threads next to another job, 8 s with 1).
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)


@pytest.fixture
def batch():
    g = torch.Generator().manual_seed(1)
    return torch.rand(4, 3, 16, 16, generator=g), torch.tensor([0, 3, 5, 9])


@pytest.mark.parametrize("eps", [0.0, 2 / 255, 8 / 255], ids=["eps0", "eps2", "eps8"])
def test_fgsm_budget_and_range(batch, eps):
    x, y = batch
    xa = fgsm(toy(), x, y, eps)
    assert xa.shape == x.shape and xa.dtype == x.dtype
    assert (xa - x).abs().max() <= eps + 1e-6 and xa.min() >= 0 and xa.max() <= 1


def test_fgsm_increases_loss(batch):
    x, y = batch
    net = toy()
    loss = nn.CrossEntropyLoss(reduction="sum")
    assert loss(net(fgsm(net, x, y, 4 / 255)), y) > loss(net(x), y)
    assert loss(net(fgsm(net, x, y, 4 / 255, targeted=True)), y) < loss(net(x), y)


@pytest.mark.parametrize("norm", ["linf", "l2"])
def test_pgd_budget_seeded_and_rng_untouched(batch, norm):
    x, y = batch
    net = toy()
    eps = 8 / 255 if norm == "linf" else 0.5
    state = torch.random.get_rng_state()
    a = pgd(net, x, y, eps, steps=3, norm=norm, generator=torch.Generator().manual_seed(5))
    b = pgd(net, x, y, eps, steps=3, norm=norm, generator=torch.Generator().manual_seed(5))
    c = pgd(net, x, y, eps, steps=3, norm=norm, generator=torch.Generator().manual_seed(6))
    assert torch.equal(torch.random.get_rng_state(), state), "the global RNG must not be used"
    assert torch.equal(a, b) and not torch.equal(a, c)
    d = (a - x).flatten(1)
    size = d.abs().max(1).values if norm == "linf" else d.norm(dim=1)
    assert (size <= eps + 1e-5).all() and a.min() >= 0 and a.max() <= 1


def test_pgd_leaves_model_alone(batch):
    x, y = batch
    net = toy().train()
    pgd(net, x, y, 8 / 255, steps=2)
    assert net.training and all(p.grad is None for p in net.parameters())


def test_pgd_beats_fgsm_on_toy(batch):
    x, y = batch
    net = toy()
    loss = nn.CrossEntropyLoss(reduction="sum")
    assert loss(net(pgd(net, x, y, 4 / 255, steps=10)), y) >= loss(net(fgsm(net, x, y, 4 / 255)), y) - 1e-4


def test_attack_errors(batch):
    x, y = batch
    with pytest.raises(ValueError, match="norm: expected one of"):
        pgd(toy(), x, y, 0.1, norm="l1")
    with pytest.raises(ValueError, match="eps: expected a finite number >= 0"):
        fgsm(toy(), x, y, -1.0)
    with pytest.raises(ValueError, match="y: expected a \\(4,\\) tensor"):
        fgsm(toy(), x, y[:2], 0.1)
    with pytest.raises(ValueError, match="steps: expected an int >= 1"):
        pgd(toy(), x, y, 0.1, steps=0)


def test_eot_averages_over_random_defence(batch):
    x, y = batch
    from fdgpu.eval.specs import RandomQualityJPEG
    model = nn.Sequential(RandomQualityJPEG(30, 90, backward="bpda", seed=0), toy())
    xa = eot(model, x, y, 8 / 255, steps=2, samples=3, generator=torch.Generator().manual_seed(0))
    assert (xa - x).abs().max() <= 8 / 255 + 1e-6


def test_bpda_identity_and_substitute():
    f = lambda t: torch.round(t * 4) / 4  # noqa: E731  (zero gradient almost everywhere)
    x = torch.rand(2, 3, 8, 8, requires_grad=True)
    out = BPDA(f)(x)
    torch.testing.assert_close(out, f(x.detach()))
    out.pow(2).sum().backward()
    torch.testing.assert_close(x.grad, 2 * out.detach())
    x.grad = None
    BPDA(f, substitute=lambda t: 3 * t)(x).sum().backward()
    torch.testing.assert_close(x.grad, torch.full_like(x, 3.0))
    with pytest.raises(TypeError, match="forward_fn: expected a callable"):
        BPDA(None)


def test_bpda_makes_non_differentiable_preprocessing_attackable(batch):
    x, y = batch
    quantize = BPDA(lambda t: torch.round(t * 8) / 8)
    xa = pgd(nn.Sequential(quantize, toy()), x, y, 8 / 255, steps=2, random_start=False)
    assert not torch.equal(xa, x)


# AutoAttack's two sanity checks (re-implemented: AutoAttack is not on PyPI): a model whose output changes between
# two calls on the same input (> 1e-4) is flagged as randomised, and gradients that vanish make gradient-based attacks
# unreliable. The layer must pass both in ste/soft/bpda and fail the gradient check in exact mode.
@pytest.mark.parametrize("backward", BACKWARDS)
def test_autoattack_checks_through_layer(backward):
    model = nn.Sequential(fdgpu.FDJpeg(1.0, backward=backward), Normalize(CIFAR10_MEAN, CIFAR10_STD), cifar_resnet(20))
    x = torch.rand(8, 3, 32, 32, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        assert (model(x) - model(x)).abs().max() < 1e-4, "AutoAttack would flag the model as randomised"
    xr = x.clone().requires_grad_(True)
    logits = model(xr)
    grad, = torch.autograd.grad(nn.functional.cross_entropy(logits, logits.argmax(1)), xr)
    zero_fraction = (grad == 0).float().mean().item()
    all_zero_images = int((grad.flatten(1).abs().sum(1) == 0).sum())
    if backward == "exact":
        assert zero_fraction > 0.99 and all_zero_images == 8, "exact mode should show gradient masking"
    else:
        assert zero_fraction < 0.05 and all_zero_images == 0


def test_torchattacks_pgd_through_layer():
    torchattacks = pytest.importorskip("torchattacks", reason="torchattacks not installed (pip install --no-deps "
                                                              "torchattacks)")
    x, y = cifar(32)
    model = pretrained(fdgpu.FDJpeg(1.0, backward="bpda"))
    attack = torchattacks.PGD(model, eps=8 / 255, alpha=2 / 255, steps=5, random_start=True)
    xa = attack(x, y)
    assert (xa - x).abs().max() <= 8 / 255 + 1e-6
    with torch.no_grad():
        clean = (model(x).argmax(1) == y).float().mean().item()
        adv = (model(xa).argmax(1) == y).float().mean().item()
    assert adv < clean - 0.3, f"torchattacks PGD through bpda should break FD: clean {clean}, adv {adv}"


def test_exact_masks_gradients_but_ste_bpda_break_the_defence():
    """Sanity property on 100 images: adaptive PGD with exact (masked) gradients adds nothing to the transfer attack,
    while the ste/bpda views drive accuracy far lower."""
    from fdgpu.eval import evaluate
    x, y = cifar(100)
    rows = evaluate(pretrained(), x, y, ["fd:1"], ["pgd:8:5"], ["transfer", "exact", "ste", "bpda"], batch_size=50)
    acc = {r["view"]: r["adv_acc"] for r in rows}
    assert acc["exact"] >= acc["transfer"] - 0.03, acc
    assert acc["ste"] < acc["transfer"] - 0.15 and acc["bpda"] < acc["transfer"] - 0.15, acc
    assert acc["ste"] < 0.2 and acc["bpda"] < 0.2, acc
