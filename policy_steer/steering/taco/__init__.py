"""TACO (arXiv 2512.02834): pseudo-count verifier fitted to the policy's own data, best-of-M selection.

- :mod:`.cfn`: the Coin Flipping Network (random prior, running statistics, safetensors);
- :mod:`.features`: the policy's last-step internal feature of sampled or given chunks;
- :mod:`.demonstrations`: the LeRobotDataset a verifier is fitted to, checked against the policy;
- :mod:`.feature_search`: TACO's high-fidelity feature search (K samples per frame, closest kept);
- :mod:`.evaluation`: held-out AUCs (recorded vs perturbed, off-support, closest vs farthest sample);
- :mod:`.verifiers`: ``cfn``, ``nearest`` and ``random`` behind one interface;
- :mod:`.storage`: the ``<checkpoint>/verifier/`` folder;
- :mod:`.fit`: ``policy-steer fit-verifier``;
- :mod:`.selection`: the sampler strategy.

Importing this package registers the steering method ``taco`` (axes ``candidates`` and ``verifier``;
options ``verifier_path`` and ``fixed_noise``).
"""

from __future__ import annotations

from typing import Any

from policy_steer.errors import ConfigError
from policy_steer.steering.registry import SteerMethod, SteerSetup, register
from policy_steer.steering.taco.cfn import CFNConfig, CoinFlipNetwork
from policy_steer.steering.taco.selection import TacoSelection
from policy_steer.steering.taco.verifiers import (
    VERIFIERS,
    CFNVerifier,
    NearestVerifier,
    RandomVerifier,
    Verifier,
    load_verifier,
)


def build(policy: Any, settings: dict[str, Any]) -> SteerSetup:
    """``settings``: candidates (M, default 16), verifier (cfn | nearest | random), verifier_path, fixed_noise."""
    try:
        m = int(settings.get("candidates", 16))
    except (TypeError, ValueError) as e:
        raise ConfigError(f"TACO candidates must be an integer, got {settings.get('candidates')!r}") from e
    verifier = load_verifier(str(settings.get("verifier") or "cfn"), policy, settings.get("verifier_path"))
    return SteerSetup([TacoSelection(verifier, m, fixed_noise=bool(settings.get("fixed_noise", False)))])


METHOD = register(SteerMethod("taco", axes=("candidates", "verifier"), build=build,
                              options=("verifier_path", "fixed_noise")))

__all__ = [
    "CFNConfig", "CFNVerifier", "CoinFlipNetwork", "METHOD", "NearestVerifier", "RandomVerifier", "TacoSelection",
    "VERIFIERS", "Verifier", "build", "load_verifier",
]
