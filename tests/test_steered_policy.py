"""SteeredPolicy.configure (the protocol's configure) and per-session history export."""

from __future__ import annotations

import numpy as np
import pytest

from policy_steer.errors import ConfigError
from policy_steer.policies import load_policy
from policy_steer.steered_policy import SteeredPolicy
from tests.fixtures.tiny_policies import ENV_DIM, STATE_DIM


def _obs(step: int, value: float) -> dict:
    return {
        "observation.state": np.full(STATE_DIM, value, np.float32),
        "observation.environment_state": np.full(ENV_DIM, value, np.float32),
        "task": "t",
        "step": step,
    }


def test_configure_changes_task_and_refuses_unknown_methods(tiny_diffusion_dir):
    sp = SteeredPolicy.from_method(load_policy(tiny_diffusion_dir), "none", seed=0)
    assert sp.configure(task="push it", steer={}) == {"method": "none"}
    assert sp.task == "push it"
    with pytest.raises(ConfigError, match="unknown steering method 'warp'"):
        sp.configure(steer={"method": "warp"})
    assert sp.method == "none" and sp.strategies == []  # nothing changed


def test_session_histories_do_not_mix(tiny_diffusion_dir):
    """Two robots on one model: exporting/importing the history gives each its own (n_obs_steps = 2)."""
    policy = load_policy(tiny_diffusion_dir)
    assert policy.spec.n_obs_steps == 2
    sp = SteeredPolicy(policy, seed=0)
    sp.predict_chunk(_obs(0, 0.0))
    state_a = sp.export_session_state()
    sp.reset()
    sp.predict_chunk(_obs(0, 5.0))
    state_b = sp.export_session_state()
    sp.import_session_state(state_a)
    hist = policy.history.stacked()["observation.state"]
    assert hist.shape[:2] == (1, 2)
    sp.import_session_state(state_b)
    hist_b = policy.history.stacked()["observation.state"]
    assert not np.allclose(hist.numpy(), hist_b.numpy())  # b's frames, not a's
