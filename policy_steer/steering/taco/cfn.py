"""The Coin Flipping Network (CFN, Lobel et al. 2023) as TACO uses it: a pseudo-count of a policy feature.

Each training feature h_i gets one fixed random vector y_i in {-1, +1}^d and the network f is fitted
to it with a mean squared error. Where n training features are indistinguishable to the network, the
best fit is the mean of their n coin-flip vectors, whose mean square is 1/n; so

    count(h) = 1 / mean_j f_j(h)^2        (higher: more in the training support)

and the winner of a selection is the argmin of ||f(h)||.

``f = net + prior``: ``net`` is a residual MLP (Linear-GELU-LayerNorm in, ``depth`` blocks of
Linear(w, 4w)-GELU-Dropout-Linear(4w, w) with a skip, Linear out to d), its output layer initialised to
zero; ``prior`` is a frozen, randomly initialised copy whose output is normalised by running
statistics to zero mean and unit variance per output. At initialisation f = normalised prior, whose
mean square is about 1, so *every* input starts at a count of about 1 (the CFN paper's optimistic
initialisation), and training only raises counts where training features are.

Inputs are standardised with the training features' per-dimension mean and std and multiplied by
``feature_scale`` (TACO scales its raw pi0 features by 10 and reports that no scaling does worse; after
standardisation a scale of 1 did best here: 0.93 held-out AUC on push against 0.91 at 3).

Sizes. TACO uses d = 20. Our verifiers are fitted on hundreds to a few thousand frames, each with its
own coin flips, and a network that can memorise them reads a count of about 1 everywhere (loss -> 0).
More coin flips per feature (d = 128) make memorising harder through the width-w bottleneck and
average the target noise: on push (870 frames, width 64, depth 1) the held-out AUC of recorded vs
perturbed chunks was 0.80 at d = 20 and 0.93 at d = 128, and it no longer depended on the number of
training steps (0.92-0.96 from 300 to 3000 steps; at d = 20: 0.90 at 200 steps, 0.78 at 800).
"""

from __future__ import annotations

import json
import math
from dataclasses import asdict, dataclass
from pathlib import Path

import torch
from torch import Tensor, nn

WEIGHTS_FILE = "cfn.safetensors"


@dataclass
class CFNConfig:
    in_dim: int
    out_dim: int = 128  # d: coin flips per feature (the paper: 20; see the module docstring)
    width: int = 64  # w
    depth: int = 1  # residual blocks
    dropout: float = 0.1
    feature_scale: float = 1.0  # applied after standardisation
    prior_seed: int = 0

    def __post_init__(self) -> None:
        if min(self.in_dim, self.out_dim, self.width) < 1 or self.depth < 0:
            raise ValueError(f"bad CFN sizes: {self}")


class _Block(nn.Module):
    def __init__(self, width: int, dropout: float) -> None:
        super().__init__()
        self.up = nn.Linear(width, 4 * width)
        self.drop = nn.Dropout(dropout)
        self.down = nn.Linear(4 * width, width)

    def forward(self, x: Tensor) -> Tensor:
        return x + self.down(self.drop(nn.functional.gelu(self.up(x))))


class CFNMLP(nn.Module):
    """[B, F] -> [B, d]: Linear-GELU-LayerNorm, residual blocks, Linear."""

    def __init__(self, cfg: CFNConfig) -> None:
        super().__init__()
        self.inp = nn.Linear(cfg.in_dim, cfg.width)
        self.norm = nn.LayerNorm(cfg.width)
        self.blocks = nn.ModuleList(_Block(cfg.width, cfg.dropout) for _ in range(cfg.depth))
        self.out = nn.Linear(cfg.width, cfg.out_dim)

    def forward(self, x: Tensor) -> Tensor:
        h = self.norm(nn.functional.gelu(self.inp(x)))
        for b in self.blocks:
            h = b(h)
        return self.out(h)


class RunningMeanStd(nn.Module):
    """Per-dimension running mean and variance (parallel Welford merge), kept as buffers."""

    def __init__(self, dim: int) -> None:
        super().__init__()
        self.register_buffer("mean", torch.zeros(dim))
        self.register_buffer("var", torch.ones(dim))
        self.register_buffer("count", torch.zeros(()))

    @torch.no_grad()
    def update(self, x: Tensor) -> None:
        """Merge a batch x [B, dim]."""
        n = x.shape[0]
        if n == 0:
            return
        b_mean, b_var = x.mean(0), x.var(0, unbiased=False)
        total = self.count + n
        delta = b_mean - self.mean
        m2 = self.var * self.count + b_var * n + delta.pow(2) * self.count * n / total
        self.mean += delta * n / total
        self.var.copy_(m2 / total)
        self.count.copy_(total)

    def normalize(self, x: Tensor) -> Tensor:
        return (x - self.mean) / torch.sqrt(self.var + 1e-6)


class CoinFlipNetwork(nn.Module):
    """``count(features [B, F]) -> [B]``; see the module docstring."""

    def __init__(self, cfg: CFNConfig) -> None:
        super().__init__()
        self.cfg = cfg
        self.net = CFNMLP(cfg)
        nn.init.zeros_(self.net.out.weight)  # optimistic start: f = normalised prior, count ~ 1
        nn.init.zeros_(self.net.out.bias)
        g = torch.random.fork_rng(devices=[])
        with g:  # the prior's weights depend on prior_seed only, not on the caller's RNG state
            torch.manual_seed(cfg.prior_seed)
            self.prior = CFNMLP(cfg)
        self.prior.requires_grad_(False)
        with torch.no_grad():  # frozen random weights: round them to float16 so they are stored in half the bytes, exactly
            for p in self.prior.parameters():
                p.copy_(p.half().float())
        self.prior_stats = RunningMeanStd(cfg.out_dim)
        self.register_buffer("feature_mean", torch.zeros(cfg.in_dim))
        self.register_buffer("feature_std", torch.ones(cfg.in_dim))

    # --- inputs -------------------------------------------------------------------------------------
    @torch.no_grad()
    def set_feature_stats(self, features: Tensor) -> None:
        """Standardisation statistics from the training features [N, F]."""
        self.feature_mean.copy_(features.mean(0))
        std = features.std(0, unbiased=False) if features.shape[0] > 1 else torch.ones_like(self.feature_std)
        # constant dimensions carry no information; do not blow their noise up
        self.feature_std.copy_(torch.where(std > 1e-6, std, torch.ones_like(std)))

    def scale(self, features: Tensor) -> Tensor:
        """[B, F] raw policy features -> [B, F] network inputs."""
        if features.shape[-1] != self.cfg.in_dim:
            raise ValueError(f"the CFN reads {self.cfg.in_dim}-d features, got {tuple(features.shape)}")
        return (features.float() - self.feature_mean) / self.feature_std * self.cfg.feature_scale

    # --- outputs ------------------------------------------------------------------------------------
    def prior_output(self, x: Tensor, update_stats: bool = False) -> Tensor:
        """Normalised frozen-prior output [B, d] of scaled inputs x [B, F]."""
        self.prior.eval()  # no dropout in the prior, ever
        with torch.no_grad():
            p = self.prior(x)
            if update_stats:
                self.prior_stats.update(p)
        return self.prior_stats.normalize(p)

    def forward(self, x: Tensor, update_stats: bool = False) -> Tensor:
        """f [B, d] of scaled inputs x [B, F]."""
        return self.net(x) + self.prior_output(x, update_stats)

    @torch.no_grad()
    def count(self, features: Tensor) -> Tensor:
        """Pseudo-count [B] of raw features [B, F]: 1 / mean(f^2)."""
        was = self.training
        self.eval()
        try:
            f = self(self.scale(features.to(self.feature_mean.device)))
        finally:
            self.train(was)
        return 1.0 / f.pow(2).mean(-1).clamp_min(1e-8)

    # --- files --------------------------------------------------------------------------------------
    def save(self, folder: str | Path) -> Path:
        """Writes ``cfn.safetensors`` (weights, prior, statistics) into ``folder``; returns its path."""
        from safetensors.torch import save_file

        path = Path(folder) / WEIGHTS_FILE
        state = {k: (v.half() if k.startswith("prior.") else v).detach().contiguous().cpu()
                 for k, v in self.state_dict().items()}
        save_file(state, str(path), metadata={"config": json.dumps(asdict(self.cfg))})
        return path

    @classmethod
    def load(cls, folder: str | Path, device: str | torch.device = "cpu") -> "CoinFlipNetwork":
        from safetensors import safe_open
        from safetensors.torch import load_file

        path = Path(folder) / WEIGHTS_FILE
        with safe_open(str(path), framework="pt") as f:
            cfg = CFNConfig(**json.loads((f.metadata() or {})["config"]))
        model = cls(cfg)
        model.load_state_dict({k: v.float() for k, v in load_file(str(path)).items()}, strict=True)
        return model.to(device).eval()


def rademacher(n: int, d: int, generator: torch.Generator) -> Tensor:
    """[n, d] independent +-1 coin flips."""
    return torch.randint(0, 2, (n, d), generator=generator).float() * 2 - 1


@dataclass
class TrainConfig:
    steps: int = 1500
    batch_size: int = 256
    lr: float = 1e-3
    weight_decay: float = 0.0
    seed: int = 0


def train_cfn(model: CoinFlipNetwork, features: Tensor, cfg: TrainConfig, progress: bool = False) -> dict:
    """Fit ``model`` to features [N, F] with one fixed coin-flip vector per row; returns figures.

    Sets the feature statistics, then trains with Adam on the mean squared error. The prior's running
    statistics are updated on every batch (the prior is frozen, so they converge to its exact output
    statistics over the training features within the first pass).
    """
    from tqdm import tqdm

    if features.ndim != 2 or features.shape[0] < 2:
        raise ValueError(f"need at least 2 training features [N, F], got {tuple(features.shape)}")
    g = torch.Generator().manual_seed(cfg.seed)
    model.set_feature_stats(features)
    x_all = model.scale(features)
    y_all = rademacher(x_all.shape[0], model.cfg.out_dim, g)
    n = x_all.shape[0]
    # warm the prior statistics on everything first: the normalisation is then right from step 0
    model.prior_output(x_all, update_stats=True)
    opt = torch.optim.AdamW(model.net.parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay)
    sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, T_max=max(1, cfg.steps))
    model.train()
    losses: list[float] = []
    bs = min(cfg.batch_size, n)
    for _ in tqdm(range(cfg.steps), desc="fit CFN", unit="step", disable=not progress, leave=False):
        idx = torch.randint(0, n, (bs,), generator=g)
        loss = nn.functional.mse_loss(model(x_all[idx], update_stats=True), y_all[idx])
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        sched.step()
        losses.append(float(loss.detach()))
    model.eval()
    tail = losses[-max(1, len(losses) // 20):]
    return {"steps": cfg.steps, "final_loss": float(sum(tail) / len(tail)), "train_frames": n}


def count_parameters(model: nn.Module) -> int:
    return sum(math.prod(t.shape) for t in model.state_dict().values())
