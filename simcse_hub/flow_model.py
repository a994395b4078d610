"""The network of BERT-flow (:mod:`simcse_hub.flow`): a Glow-style normalizing flow on vectors.

Each step is ActNorm -> invertible linear map (LU-decomposed) -> affine coupling; the base distribution is a standard
Gaussian. Every layer returns its output and the log-determinant of its Jacobian, and has an exact inverse.

References: Kingma & Dhariwal, "Glow: Generative Flow with Invertible 1x1 Convolutions", 2018
(https://arxiv.org/abs/1807.03039); Dinh, Sohl-Dickstein & Bengio, "Density estimation using Real NVP", 2017.
"""

from __future__ import annotations

import logging
import math

import numpy as np
import torch
from torch import nn

logger = logging.getLogger(__name__)

_LOG_2PI = math.log(2 * math.pi)


# --------------------------------------------------------------------------------------------------- the network


class ActNorm(nn.Module):
    r"""Per-dimension affine map ``y = x * exp(log_scale) + bias`` (Glow's ActNorm), initialised from a batch.

    The shift comes after the scale (Glow shifts first), so that an optimiser step on ``bias`` moves the output by
    that much and no more even where the scale is large; and the initialisation never scales a dimension by more
    than ``1 / min_std``. Without both, a nearly constant dimension (all-MiniLM-L6-v2 has three) gets a scale of
    ~1e6 and the first Adam step sends the loss to 1e5.
    """

    min_std = 1e-2

    def __init__(self, dim: int) -> None:
        super().__init__()
        self.log_scale = nn.Parameter(torch.zeros(dim))  # (dim,)
        self.bias = nn.Parameter(torch.zeros(dim))  # (dim,)

    @torch.no_grad()
    def initialize(self, x: torch.Tensor) -> None:
        """Data-dependent initialisation: the output of ``x`` `(n, dim)` has mean 0 and variance 1 per dimension."""
        self.log_scale.copy_(-torch.log(x.std(dim=0, unbiased=False).clamp_min(self.min_std)))
        self.bias.copy_(-x.mean(dim=0) * torch.exp(self.log_scale))

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        return x * torch.exp(self.log_scale) + self.bias, self.log_scale.sum()

    def inverse(self, y: torch.Tensor) -> torch.Tensor:
        return (y - self.bias) * torch.exp(-self.log_scale)


class InvertibleLinear(nn.Module):
    r"""Invertible linear map ``y = W x`` with ``W = P L (U + diag(sign_s * exp(log_s)))`` (Glow's LU form).

    ``P`` (a permutation matrix) and ``sign_s`` are fixed buffers; ``L`` (unit lower triangular), ``U`` (strictly upper
    triangular) and ``log_s`` are trained, so ``log|det W| = sum(log_s)``. Initialised from the LU decomposition of a
    random rotation (drawn from torch's global RNG), so the map starts volume-preserving.
    """

    def __init__(self, dim: int) -> None:
        super().__init__()
        rotation, _ = torch.linalg.qr(torch.randn(dim, dim, dtype=torch.float64))  # (dim, dim)
        P, L, U = torch.linalg.lu(rotation)
        s = torch.diagonal(U)  # (dim,)
        self.register_buffer("P", P.float())  # (dim, dim)
        self.register_buffer("sign_s", torch.sign(s).float())  # (dim,)
        self.L = nn.Parameter(torch.tril(L, -1).float())  # (dim, dim), only the strictly lower part is used
        self.U = nn.Parameter(torch.triu(U, 1).float())  # (dim, dim), only the strictly upper part is used
        self.log_s = nn.Parameter(torch.log(torch.abs(s)).float())  # (dim,)
        self.register_buffer("lower_mask", torch.tril(torch.ones(dim, dim), -1), persistent=False)
        self.register_buffer("eye", torch.eye(dim), persistent=False)

    def _factors(self) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        L = self.L * self.lower_mask + self.eye  # (dim, dim)
        U = self.U * self.lower_mask.T + torch.diag(self.sign_s * torch.exp(self.log_s))  # (dim, dim)
        return L, U, self.P.argmax(dim=1)  # row j of P has its 1 in column permutation[j]

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        L, U, permutation = self._factors()
        y = (x @ U.T) @ L.T  # (n, dim): rows (L U x)^T; two (n, dim) x (dim, dim) products, no (dim, dim) one
        return y[:, permutation], self.log_s.sum()  # P applied as a gather

    def inverse(self, y: torch.Tensor) -> torch.Tensor:
        L, U, permutation = self._factors()
        h = torch.empty_like(y)
        h[:, permutation] = y  # P^T y
        h = torch.linalg.solve_triangular(L.T, h, upper=True, left=False, unitriangular=True)  # h L^-T
        return torch.linalg.solve_triangular(U.T, h, upper=False, left=False)  # (n, dim)


class AffineCoupling(nn.Module):
    r"""Affine coupling (RealNVP, Glow): the first half ``a`` of ``x`` passes unchanged and sets a scale and shift of
    the second half ``b``: ``b' = b * exp(log_s(a)) + t(a)``, with ``log_s = bound * tanh(raw / bound)`` in
    ``[-bound, bound]`` for stability. The MLP's last layer starts at zero, so the coupling starts as the identity.
    """

    def __init__(self, dim: int, hidden_size: int, log_scale_bound: float) -> None:
        super().__init__()
        self.split, self.bound = dim // 2, float(log_scale_bound)
        self.net = nn.Sequential(
            nn.Linear(self.split, hidden_size), nn.ReLU(),
            nn.Linear(hidden_size, hidden_size), nn.ReLU(),
            nn.Linear(hidden_size, 2 * (dim - self.split)),
        )
        nn.init.zeros_(self.net[-1].weight)
        nn.init.zeros_(self.net[-1].bias)

    def _scale_shift(self, a: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        raw_scale, shift = self.net(a).chunk(2, dim=1)  # (n, dim - split) each
        return self.bound * torch.tanh(raw_scale / self.bound), shift

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        a, b = x[:, : self.split], x[:, self.split:]
        log_scale, shift = self._scale_shift(a)
        return torch.cat([a, b * torch.exp(log_scale) + shift], dim=1), log_scale.sum(dim=1)

    def inverse(self, y: torch.Tensor) -> torch.Tensor:
        a, b = y[:, : self.split], y[:, self.split:]
        log_scale, shift = self._scale_shift(a)
        return torch.cat([a, (b - shift) * torch.exp(-log_scale)], dim=1)


class FlowStep(nn.Module):
    """One Glow step: ActNorm -> invertible linear map -> affine coupling."""

    def __init__(self, dim: int, hidden_size: int, log_scale_bound: float) -> None:
        super().__init__()
        self.actnorm = ActNorm(dim)
        self.linear = InvertibleLinear(dim)
        self.coupling = AffineCoupling(dim, hidden_size, log_scale_bound)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        x, logdet_actnorm = self.actnorm(x)
        x, logdet_linear = self.linear(x)
        x, logdet_coupling = self.coupling(x)
        return x, logdet_actnorm + logdet_linear + logdet_coupling  # (n,)

    def inverse(self, z: torch.Tensor) -> torch.Tensor:
        return self.actnorm.inverse(self.linear.inverse(self.coupling.inverse(z)))


class FlowModel(nn.Module):
    r"""The flow network: standardisation by fixed buffers ``input_mean`` / ``input_std``, then [`FlowStep`]s.

    Args:
        dim (`int`): the embedding size (at least 2: a coupling splits the vector in two).
        num_steps (`int`, *optional*, defaults to 2): the number of flow steps.
        hidden_size (`int`, *optional*, defaults to 128): the width of each coupling's MLP (two hidden layers).
        log_scale_bound (`float`, *optional*, defaults to 2.0): each coupling's log-scale lies in ``[-b, b]``.

    The parameters are drawn from torch's global RNG: seed it (or use `torch.random.fork_rng`) for a fixed network.

    >>> model, x = FlowModel(8, num_steps=2, hidden_size=16), torch.randn(5, 8)
    >>> z, logdet = model(x)  # z: (5, 8), logdet: (5,)
    >>> bool(torch.allclose(model.inverse(z), x, atol=1e-5))
    True
    """

    def __init__(self, dim: int, num_steps: int = 2, hidden_size: int = 128, log_scale_bound: float = 2.0) -> None:
        super().__init__()
        self.dim, self.num_steps, self.hidden_size = dim, num_steps, hidden_size
        self.log_scale_bound = float(log_scale_bound)
        self.register_buffer("input_mean", torch.zeros(dim))  # (dim,)
        self.register_buffer("input_std", torch.ones(dim))  # (dim,)
        self.steps = nn.ModuleList(FlowStep(dim, hidden_size, log_scale_bound) for _ in range(num_steps))

    @torch.no_grad()
    def initialize(self, x: torch.Tensor) -> None:
        """Data-dependent initialisation of every ActNorm, in order, on the batch ``x`` `(n, dim)`."""
        h = (x - self.input_mean) / self.input_std
        for step in self.steps:
            step.actnorm.initialize(h)
            h, _ = step(h)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """``z = f(x)`` `(n, dim)` and ``log|det df/dx|`` `(n,)`."""
        z = (x - self.input_mean) / self.input_std
        logdet = -torch.log(self.input_std).sum().expand(x.shape[0])  # (n,)
        for step in self.steps:
            z, step_logdet = step(z)
            logdet = logdet + step_logdet
        return z, logdet

    def inverse(self, z: torch.Tensor) -> torch.Tensor:
        """``x = f^-1(z)`` `(n, dim)`."""
        for step in reversed(self.steps):
            z = step.inverse(z)
        return z * self.input_std + self.input_mean

    def log_prob(self, x: torch.Tensor) -> torch.Tensor:
        """``log p(x) = log N(f(x); 0, I) + log|det df/dx|`` in nats, `(n,)`."""
        z, logdet = self(x)
        return -0.5 * (z.pow(2).sum(dim=1) + self.dim * _LOG_2PI) + logdet


# --------------------------------------------------------------------------------------------------- fitting


class Batches:
    """Endless mini-batches of ``data`` `(n, dim)`: a fresh random permutation each epoch, the last epoch's tail
    first, so every batch is full."""

    def __init__(self, data: torch.Tensor, batch_size: int, generator: torch.Generator) -> None:
        self.data, self.batch_size, self.generator = data, batch_size, generator
        self.order, self.position = torch.randperm(len(data), generator=generator), 0

    def __call__(self) -> torch.Tensor:
        if self.position + self.batch_size > len(self.data):  # a new epoch
            fresh = torch.randperm(len(self.data), generator=self.generator)
            self.order, self.position = torch.cat([self.order[self.position:], fresh]), 0
        self.position += self.batch_size
        return self.data[self.order[self.position - self.batch_size:self.position].to(self.data.device)]


@torch.no_grad()
def mean_nll(model: FlowModel, data: torch.Tensor, rows: int) -> float:
    """The mean negative log-likelihood of ``data`` `(n, dim)` in nats per dimension, in eval mode, ``rows`` rows
    per forward pass."""
    model.eval()
    total = sum(float(model.log_prob(chunk).sum()) for chunk in data.split(rows))
    model.train()
    return -total / data.numel()


def standardization(x: np.ndarray, n: int) -> tuple[np.ndarray, np.ndarray]:
    """The per-dimension mean and spread of the training embeddings `(n_train, dim)`; a (nearly) constant dimension
    is centred, not scaled (its spread is 1), with a warning; all constant is a `ValueError`."""
    mean, std = x.mean(axis=0), x.std(axis=0)  # (dim,) each
    constant = std <= 1e-6 * max(float(std.max()), 1e-300)  # float32 rounding noise at best
    if constant.all():
        raise ValueError(f"Flow.fit: all {n} embeddings are the same vector; there is no distribution to fit.")
    if constant.any():
        logger.warning("Flow.fit: %d of %d dimensions are (nearly) constant on the corpus (first: %d); they are "
                       "centred, not scaled, and carry no information.", constant.sum(), x.shape[1],
                       np.flatnonzero(constant)[0])
        std = np.where(constant, 1.0, std)
    return mean, std


__all__ = ["ActNorm", "AffineCoupling", "Batches", "FlowModel", "FlowStep", "InvertibleLinear", "mean_nll",
           "standardization"]
