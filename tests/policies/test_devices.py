"""Devices: a checkpoint's saved device steps follow the device the policy is loaded on; a device this
machine lacks, or a transformers outside pi0/pi05's range, is refused by name."""

from __future__ import annotations

import json
import shutil

import numpy as np
import pytest
import torch

from policy_steer.errors import CheckpointError, ConfigError
from policy_steer.policies import load_policy
from policy_steer.policies.loading import PI_TRANSFORMERS, check_device, check_transformers
from policy_steer.steered_policy import SteeredPolicy
from tests.fixtures.tiny_policies import ACTION_DIM, ENV_DIM, STATE_DIM, build_tiny_diffusion


def _obs() -> dict:
    rng = np.random.default_rng(0)
    return {
        "observation.state": rng.standard_normal(STATE_DIM).astype(np.float32),
        "observation.environment_state": rng.standard_normal(ENV_DIM).astype(np.float32),
        "task": "push the block",
        "step": 0,
    }


def _set_saved_device(folder, device: str) -> None:
    """Write ``device`` into both pipelines' device step, as lerobot's training on a GPU does."""
    for name in ("policy_preprocessor.json", "policy_postprocessor.json"):
        path = folder / name
        data = json.loads(path.read_text())
        steps = [s for s in data["steps"] if s.get("registry_name") == "device_processor"]
        assert steps, f"the tiny checkpoint's {name} has a device step"
        for s in steps:
            s["config"]["device"] = device
        path.write_text(json.dumps(data))


def _device_steps(pipeline) -> list[str]:
    return [str(s.device) for s in pipeline.steps if type(s).__name__ == "DeviceProcessorStep"]


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    return build_tiny_diffusion(tmp_path_factory.mktemp("devices") / "ckpt", scheduler="DDIM")


def test_a_checkpoint_saved_on_a_gpu_loads_and_runs_on_this_device(tiny, tmp_path):
    gpu_saved = tmp_path / "gpu-saved"
    shutil.copytree(tiny, gpu_saved)
    _set_saved_device(gpu_saved, "cuda")

    ref = load_policy(tiny)
    moved = load_policy(gpu_saved, device="cpu")
    assert _device_steps(moved.preprocessor) == ["cpu"] and _device_steps(moved.postprocessor) == ["cpu"]

    # The inputs meet the model on its device, and the chunk is the one the original gives.
    batch = moved.preprocessor({"observation.state": torch.from_numpy(_obs()["observation.state"]),
                                "observation.environment_state": torch.from_numpy(_obs()["observation.environment_state"]),
                                "task": "push the block"})
    assert {t.device for t in batch.values() if isinstance(t, torch.Tensor)} == {moved.device}
    a = SteeredPolicy(ref, seed=0).predict_chunk(_obs())
    b = SteeredPolicy(moved, seed=0).predict_chunk(_obs())
    assert a.actions.shape[-1] == ACTION_DIM
    np.testing.assert_allclose(a.actions, b.actions, atol=1e-6)


@pytest.mark.skipif(torch.cuda.is_available(), reason="this machine has CUDA: the refusal is for machines without it")
def test_a_device_this_machine_lacks_is_refused_before_loading(tiny):
    with pytest.raises(ConfigError, match="no cuda device"):
        load_policy(tiny, device="cuda")
    with pytest.raises(ConfigError, match="not a torch device"):
        check_device("gpu0")
    with pytest.raises(ConfigError, match="not tpu|not a torch device"):
        check_device("tpu")


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device (run on the device machine)")
def test_on_cuda_the_model_and_its_inputs_are_on_the_gpu(tiny):
    policy = load_policy(tiny, device="cuda")
    assert policy.device.type == "cuda"
    assert _device_steps(policy.preprocessor) == ["cuda"] and _device_steps(policy.postprocessor) == ["cpu"]
    chunk = SteeredPolicy(policy, seed=0).predict_chunk(_obs())
    assert isinstance(chunk.actions, np.ndarray) and np.isfinite(chunk.actions).all()


def test_pi_models_refuse_a_transformers_outside_their_range():
    check_transformers("pi0", "5.5.1")
    with pytest.raises(CheckpointError, match=r"5\.17\.0 is installed") as e:
        check_transformers("pi05", "5.17.0")
    assert PI_TRANSFORMERS in str(e.value)
    with pytest.raises(CheckpointError, match="pi0 .*needs transformers"):
        check_transformers("pi0", "4.57.0")
