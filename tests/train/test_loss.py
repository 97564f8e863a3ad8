"""Each loss term against a float64 computation written out by hand on tiny linear networks.

With G(z) = A @ ws (ws = z broadcast to num_ws copies) and D(x) = <v, x> + b, the
gradients that R1 and path-length regularisation need have closed forms:
- dD/dx = v, so the R1 penalty of every real image is |v|^2;
- d<G(ws), noise>/dws[k] = A_k^T noise, so path lengths are known exactly.
"""

import math

import pytest
import torch

from stylegan_fast.train.loss import StyleGAN2Loss

Z, NUM_WS, RES = 3, 2, 4
F64 = dict(dtype=torch.float64)


class LinearMapping(torch.nn.Module):
    def __init__(self):
        super().__init__()
        self.num_ws = NUM_WS
        self.scale = torch.nn.Parameter(torch.ones([], **F64))  # 1: w = z, but ws then require grad

    def forward(self, z, c, update_emas=False):
        return (z * self.scale).unsqueeze(1).repeat(1, self.num_ws, 1)


class LinearSynthesis(torch.nn.Module):
    def __init__(self):
        super().__init__()
        self.A = torch.nn.Parameter(torch.randn(NUM_WS, 1 * RES * RES, Z, **F64) * 0.3)

    def forward(self, ws):
        return torch.einsum("kpz,nkz->np", self.A, ws).reshape(-1, 1, RES, RES)


class LinearG(torch.nn.Module):
    def __init__(self):
        super().__init__()
        self.z_dim = Z
        self.mapping = LinearMapping()
        self.synthesis = LinearSynthesis()


class LinearD(torch.nn.Module):
    def __init__(self):
        super().__init__()
        self.v = torch.nn.Parameter(torch.randn(1 * RES * RES, **F64) * 0.5)
        self.b = torch.nn.Parameter(torch.randn([], **F64))

    def forward(self, img, c):
        return (img.flatten(1) @ self.v + self.b).unsqueeze(1)


@pytest.fixture
def nets():
    torch.manual_seed(0)
    return LinearG(), LinearD()


def inputs(n=6):
    gen = torch.Generator().manual_seed(1)
    return torch.randn(n, Z, generator=gen, **F64), torch.zeros(n, 0, **F64), torch.randn(n, 1, RES, RES, generator=gen, **F64)


def image_of(G, z):
    """G's image of latent z, flattened: sum_k A_k z (every w equals z without mixing)."""
    return sum(G.synthesis.A.detach()[k] @ z for k in range(NUM_WS))


@pytest.mark.parametrize("loss", ["ns", "lsgan", "wgan-gp"])
def test_G_main_gradient(nets, loss):
    G, D = nets
    z, c, _ = inputs()
    StyleGAN2Loss(G, D, loss=loss, style_mixing_prob=0).G_main(z, c, gain=0.5)
    v, b = D.v.detach(), D.b.detach()
    # By hand: logit_i = <v, sum_k A_k z_i> + b; dlogit_i/dA_k = v z_i^T.
    logits = torch.stack([v @ image_of(G, zi) + b for zi in z])
    dloss_dlogit = {"ns": -torch.sigmoid(-logits), "lsgan": logits - 1, "wgan-gp": -torch.ones_like(logits)}[loss]
    expected = 0.5 * sum(g * torch.outer(v, zi) for g, zi in zip(dloss_dlogit, z)) / len(z)
    for k in range(NUM_WS):
        torch.testing.assert_close(G.synthesis.A.grad[k], expected, rtol=1e-10, atol=1e-12)
    assert D.v.grad is not None  # D is not frozen by the loss; the trainer toggles requires_grad


@pytest.mark.parametrize("loss", ["ns", "lsgan"])
def test_D_main_gradient_and_w_sums(nets, loss):
    G, D = nets
    z, c, real = inputs()
    out = StyleGAN2Loss(G, D, loss=loss, style_mixing_prob=0).D_main(real, c, z, c, gain=2.0)
    fake = torch.stack([image_of(G, zi) for zi in z])
    real_flat = real.flatten(1)
    fake_logits, real_logits = fake @ D.v.detach() + D.b.detach(), real_flat @ D.v.detach() + D.b.detach()
    if loss == "ns":
        d_fake, d_real = torch.sigmoid(fake_logits), -torch.sigmoid(-real_logits)
    else:
        d_fake, d_real = fake_logits, real_logits - 1
    n = len(z)
    torch.testing.assert_close(D.v.grad, 2.0 * (d_fake @ fake + d_real @ real_flat) / n, rtol=1e-10, atol=1e-12)
    torch.testing.assert_close(D.b.grad, 2.0 * (d_fake.sum() + d_real.sum()) / n, rtol=1e-10, atol=1e-12)
    assert G.synthesis.A.grad is None  # generated images are constants for D
    torch.testing.assert_close(out["w_sum"], z.sum(0))
    assert out["w_count"].item() == n


def test_R1_penalty_and_gradient(nets):
    G, D = nets
    z, c, real = inputs()
    out = StyleGAN2Loss(G, D, r1_gamma=3.0).D_reg(real, c, z, c, gain=16.0)
    v = D.v.detach()
    # Penalty per image |v|^2, loss gamma/2 |v|^2, gradient wrt v: gamma * v, times the gain.
    torch.testing.assert_close(out["r1_penalty"], v.square().sum())
    torch.testing.assert_close(out["loss/D_r1"], 1.5 * v.square().sum())
    torch.testing.assert_close(D.v.grad, 16.0 * 3.0 * v, rtol=1e-10, atol=1e-12)


def test_path_length_penalty_and_gradient(nets):
    G, D = nets
    z, c, _ = inputs(n=6)
    loss = StyleGAN2Loss(G, D, pl_weight=2.0, pl_batch_shrink=2, style_mixing_prob=0)
    loss.pl_mean = torch.tensor(0.7, **F64)
    torch.manual_seed(5)
    out = loss.G_reg(z, c, gain=4.0)
    torch.manual_seed(5)
    noise = torch.randn(3, 1, RES, RES, **F64) / math.sqrt(RES * RES)  # the same draw as inside G_reg
    A = G.synthesis.A.detach()
    # d<img_i, noise_i>/dws[i, k] = A_k^T noise_i; length_i = sqrt(mean_k |A_k^T noise_i|^2).
    lengths = torch.stack([(torch.stack([A[k].T @ ni.flatten() for k in range(NUM_WS)]).square().sum(1).mean()).sqrt() for ni in noise])
    torch.testing.assert_close(out["pl_sum"], lengths.sum())
    assert out["pl_count"].item() == 3
    torch.testing.assert_close(out["loss/G_pl"], (2.0 * (lengths - 0.7).square()).mean())

    # By hand: d length_i / dA_k = noise_i (A_k^T noise_i)^T / (NUM_WS * length_i).
    expected = torch.zeros_like(A)
    for ni, li in zip(noise, lengths):
        dpen = 4.0 * 2.0 * 2 * (li - 0.7) / 3
        for k in range(NUM_WS):
            g = A[k].T @ ni.flatten()
            expected[k] += dpen * torch.outer(ni.flatten(), g) / (NUM_WS * li)
    torch.testing.assert_close(G.synthesis.A.grad, expected, rtol=1e-9, atol=1e-12)


def test_pl_mean_update():
    loss = StyleGAN2Loss(LinearG(), LinearD(), pl_decay=0.01)
    loss.pl_mean = torch.tensor(2.0)
    loss.update_pl_mean(torch.tensor(12.0), torch.tensor(4.0))
    assert loss.pl_mean.item() == pytest.approx(2.0 + 0.01 * (3.0 - 2.0))


def test_wgan_gradient_penalty(nets):
    G, D = nets
    z, c, real = inputs()
    out = StyleGAN2Loss(G, D, loss="wgan-gp", gp_lambda=10.0).D_reg(real, c, z, c, gain=1.0)
    # The gradient wrt any interpolate is v, so the penalty is lambda (|v| - 1)^2 for every image.
    norm = D.v.detach().norm()
    torch.testing.assert_close(out["loss/D_gp"], 10.0 * (norm - 1) ** 2)
    torch.testing.assert_close(D.v.grad, 10.0 * 2 * (norm - 1) * D.v.detach() / norm, rtol=1e-8, atol=1e-10)


def test_style_mixing_switches_ws_after_a_crossover(nets):
    G, D = nets
    loss = StyleGAN2Loss(G, D, style_mixing_prob=1.0)
    G.mapping.num_ws = 5
    z = torch.randn(2, Z, **F64)
    torch.manual_seed(3)
    captured = {}
    G.synthesis.forward = lambda ws: captured.setdefault("ws", ws)
    loss.run_G(z, torch.zeros(2, 0))
    ws = captured["ws"]
    first = (ws == z.unsqueeze(1)).all(dim=2).all(dim=0)  # layers still driven by z
    cutoff = int(first.sum())
    assert 1 <= cutoff < 5 and first[:cutoff].all() and not first[cutoff:].any()


def test_rejects_unknown_loss(nets):
    with pytest.raises(ValueError, match="loss must be one of ns, wgan-gp, lsgan"):
        StyleGAN2Loss(*nets, loss="hinge")
