"""A checkpoint folder is data: what it names is refused before anything is imported or run.

The attack of issue 14: a copy of checkpoints/push-diffusion whose policy_preprocessor.json carries
``{"class": "subprocess.Popen", "config": {"args": ["sh", "-c", "touch <marker>"]}}``. lerobot's
processor loader would import ``subprocess`` and call ``Popen(args=...)`` (the command runs, then lerobot
says "must inherit from ProcessorStep"). Every test here asserts the refusal and that the planted
marker never appears; no test runs a planted command (the trusted path uses lerobot's harmless
``IdentityProcessorStep``).

Also here: pickle weights, ``auto_map`` remote code, paths that leave the checkpoint, the guard that
holds while lerobot and transformers load, the shipped checkpoints, and verifier compatibility
(fingerprint, feature width, action shape).
"""

from __future__ import annotations

import json
import logging
import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from policy_steer.errors import CheckpointError, ConfigError
from policy_steer.policies import load_policy
from policy_steer.policies.checkpoint_safety import PICKLE_SUFFIXES, StepRule, inspect_checkpoint, loading_guard

ROOT = Path(__file__).resolve().parents[2]
CHECKPOINTS = ROOT / "checkpoints"
PUSH = CHECKPOINTS / "push-diffusion"
PUSH_FLOW = CHECKPOINTS / "push-flow"
SHIPPED = sorted(p for p in CHECKPOINTS.iterdir() if (p / "config.json").is_file())
WITH_VERIFIER = [p for p in SHIPPED if (p / "verifier" / "verifier.json").is_file()]
PLANTED_MODULE = "tests.policies.planted_module"


def copy_checkpoint(src: Path, dst: Path, verifier: bool = False) -> Path:
    shutil.copytree(src, dst, ignore=None if verifier else shutil.ignore_patterns("verifier"))
    return dst


def edit_json(path: Path, change) -> None:
    data = json.loads(path.read_text())
    change(data)
    path.write_text(json.dumps(data, indent=2))


def insert_step(folder: Path, step: dict, index: int = 1, file: str = "policy_preprocessor.json") -> Path:
    edit_json(folder / file, lambda d: d["steps"].insert(index, step))
    return folder


def popen_step(marker: Path) -> dict:
    return {"class": "subprocess.Popen", "config": {"args": ["sh", "-c", f"touch {marker}"]}}


@pytest.fixture(scope="module")
def rule() -> StepRule:
    return StepRule()


# --- the planted processor step ------------------------------------------------------------------------

def test_planted_class_step_is_refused_by_name_and_never_runs(tmp_path):
    marker = tmp_path / "pwned"
    folder = insert_step(copy_checkpoint(PUSH, tmp_path / "ckpt"), popen_step(marker))
    with pytest.raises(CheckpointError) as e:
        load_policy(folder)
    msg = str(e.value)
    assert "\n" not in msg
    assert "policy_preprocessor.json: step 1 names class 'subprocess.Popen'" in msg
    assert "trust_checkpoint" in msg
    assert not marker.exists()


def test_serve_refuses_the_planted_step_with_one_line_and_exit_2(tmp_path):
    marker = tmp_path / "pwned"
    folder = insert_step(copy_checkpoint(PUSH, tmp_path / "ckpt"), popen_step(marker))
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "OMP_NUM_THREADS": "1"}
    proc = subprocess.run(
        [sys.executable, "-m", "policy_steer.cli.main", "serve", "--policy", str(folder), "--bind", "tcp://127.0.0.1:*"],
        cwd=ROOT, env=env, capture_output=True, text=True, timeout=300,
    )
    assert proc.returncode == 2, proc.stderr[-2000:]
    lines = [ln for ln in proc.stderr.splitlines() if ln.startswith("policy-steer: error:")]
    assert len(lines) == 1, proc.stderr[-2000:]
    assert "policy_preprocessor.json: step 1 names class 'subprocess.Popen'" in lines[0]
    assert not marker.exists()


def test_a_named_module_is_never_imported(tmp_path, monkeypatch):
    marker = tmp_path / "imported"
    monkeypatch.setenv("POLICY_STEER_PLANTED_MARKER", str(marker))
    monkeypatch.delitem(sys.modules, PLANTED_MODULE, raising=False)
    folder = insert_step(copy_checkpoint(PUSH, tmp_path / "ckpt"), {"class": f"{PLANTED_MODULE}.PlantedStep", "config": {}},
                         index=0, file="policy_postprocessor.json")
    named = rf"policy_postprocessor.json: step 0 names class '{PLANTED_MODULE}.PlantedStep'"
    with pytest.raises(CheckpointError, match=named):
        load_policy(folder)
    assert PLANTED_MODULE not in sys.modules and not marker.exists()


def test_an_unregistered_registry_name_is_refused(tmp_path):
    folder = insert_step(copy_checkpoint(PUSH, tmp_path / "ckpt"), {"registry_name": "totally_not_registered", "config": {}})
    named = r"policy_preprocessor.json: step 1 names registry_name 'totally_not_registered'"
    with pytest.raises(CheckpointError, match=named):
        load_policy(folder)


def test_a_registry_name_does_not_smuggle_a_class(tmp_path):
    """lerobot reads registry_name first; a class beside it must pass the same allow-list."""
    marker = tmp_path / "pwned"
    step = {"registry_name": "to_batch_processor", **popen_step(marker)}
    folder = insert_step(copy_checkpoint(PUSH, tmp_path / "ckpt"), step)
    with pytest.raises(CheckpointError, match="subprocess.Popen"):
        load_policy(folder)
    assert not marker.exists()


def test_a_registered_step_named_by_its_class_loads(tmp_path, rule):
    """The allow-list of classes is the registered steps' module.QualName (decided without importing)."""
    cls = rule.by_name["to_batch_processor"]
    path = f"{cls.__module__}.{cls.__qualname__}"

    def by_class(d):
        d["steps"][1] = {"class": path, "config": {}}

    folder = copy_checkpoint(PUSH, tmp_path / "ckpt")
    edit_json(folder / "policy_preprocessor.json", by_class)
    assert inspect_checkpoint(folder, rule) == []
    policy = load_policy(folder)
    assert policy.spec.action_dim == 3


def test_steps_that_load_remote_code_or_leave_the_folder_are_refused(tmp_path, rule):
    folder = copy_checkpoint(PUSH_FLOW, tmp_path / "ckpt")
    # action_tokenizer_processor turns trust_remote_code on by default
    insert_step(folder, {"registry_name": "action_tokenizer_processor", "config": {"action_tokenizer_name": "tiny_clip"}})
    # a state file above the checkpoint, a tokenizer folder above it
    edit_json(folder / "policy_postprocessor.json", lambda d: d["steps"][0].update(state_file="../stats.safetensors"))
    (tmp_path / "outside_tokenizer").mkdir()
    edit_json(folder / "policy_preprocessor.json",
              lambda d: d["steps"][3]["config"].update(tokenizer_name="../outside_tokenizer"))
    lines = [f.line() for f in inspect_checkpoint(folder, rule)]
    assert any("policy_preprocessor.json: step 1 (action_tokenizer_processor)" in ln and "trust_remote_code" in ln
               for ln in lines)
    assert any("policy_postprocessor.json: step 0 names state_file '../stats.safetensors'" in ln for ln in lines)
    assert any("step 3 names tokenizer_name '../outside_tokenizer'" in ln for ln in lines)
    with pytest.raises(CheckpointError, match=r"\(and 2 more\)"):
        load_policy(folder)


def test_a_hub_download_is_checked_the_same_way(tmp_path, monkeypatch):
    """A hub id is downloaded (snapshot_download), then inspected like a local folder."""
    import huggingface_hub

    marker = tmp_path / "pwned"
    folder = insert_step(copy_checkpoint(PUSH, tmp_path / "snapshot"), popen_step(marker))
    asked = []
    monkeypatch.setattr(huggingface_hub, "snapshot_download", lambda repo_id, **k: asked.append(repo_id) or str(folder))
    with pytest.raises(CheckpointError, match=r"policy_preprocessor.json: step 1 names class 'subprocess.Popen'"):
        load_policy("someone/hostile-policy")
    assert asked == ["someone/hostile-policy"] and not marker.exists()


def test_fit_verifier_and_train_reference_refuse_the_planted_step(tmp_path):
    from policy_steer.steering.taco.fit import Config as FitConfig
    from policy_steer.steering.taco.fit import fit_verifier
    from policy_steer.training.reference import fine_tune_config

    marker = tmp_path / "pwned"
    folder = insert_step(copy_checkpoint(PUSH, tmp_path / "ckpt"), popen_step(marker))
    with pytest.raises(CheckpointError, match="subprocess.Popen"):
        fit_verifier(FitConfig(policy=str(folder), dataset=str(tmp_path / "no-dataset")))
    with pytest.raises(CheckpointError, match="subprocess.Popen"):  # train-reference --init_from
        fine_tune_config(folder, {})
    assert not marker.exists()


# --- the opt-in ----------------------------------------------------------------------------------------

def test_trust_checkpoint_loads_as_lerobot_would_and_warns(tmp_path, caplog):
    """An importable but unregistered step (lerobot's own harmless IdentityProcessorStep)."""
    step = {"class": "lerobot.processor.pipeline.IdentityProcessorStep", "config": {}}
    folder = insert_step(copy_checkpoint(PUSH, tmp_path / "ckpt"), step)
    with pytest.raises(CheckpointError, match="IdentityProcessorStep"):
        load_policy(folder)
    with caplog.at_level(logging.WARNING, logger="policy_steer.policies.checkpoint_safety"):
        policy = load_policy(folder, trust_checkpoint=True)
    assert type(policy.preprocessor.steps[1]).__name__ == "IdentityProcessorStep"
    warnings = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert any("TRUSTING CHECKPOINT" in w and str(folder) in w and "IdentityProcessorStep" in w for w in warnings)
    reference = load_policy(PUSH)
    obs = {"observation.state": np.zeros(19, np.float32), "observation.environment_state": np.zeros(10, np.float32),
           "step": 0, "task": "push the block into the target region"}
    assert torch.equal(policy.prepare(obs).tensors["global_cond"], reference.prepare(obs).tensors["global_cond"])


# --- config.json ---------------------------------------------------------------------------------------

@pytest.mark.parametrize("kind", ["act", "not_a_policy", "subprocess.Popen", None])
def test_a_policy_type_without_an_adapter_is_refused(tmp_path, kind, rule):
    folder = copy_checkpoint(PUSH, tmp_path / "ckpt")
    edit_json(folder / "config.json", lambda d: d.update(type=kind))
    assert [f.line() for f in inspect_checkpoint(folder, rule)] == [
        f"config.json: has policy type {kind!r}, which is not one policy-steer loads "
        "(diffusion, pi0, pi05, smolvla, multi_task_dit)"
    ]
    with pytest.raises(CheckpointError, match=r"config.json: has policy type"):
        load_policy(folder)


def test_a_backbone_path_outside_the_checkpoint_is_refused(tmp_path, rule):
    folder = copy_checkpoint(PUSH_FLOW, tmp_path / "ckpt")
    shutil.copytree(folder / "tiny_clip", tmp_path / "elsewhere" / "clip")
    edit_json(folder / "config.json", lambda d: d.update(text_encoder_name=str(tmp_path / "elsewhere" / "clip")))
    assert any("config.json: text_encoder_name" in f.line() for f in inspect_checkpoint(folder, rule))
    # a training machine's absolute path to a folder the checkpoint carries stands for that folder
    edit_json(folder / "config.json", lambda d: d.update(text_encoder_name="/home/someone/train/tiny_clip"))
    assert inspect_checkpoint(folder, rule) == []


# --- weights: safetensors only -------------------------------------------------------------------------

def test_a_bin_only_checkpoint_is_refused(tmp_path):
    folder = copy_checkpoint(PUSH, tmp_path / "ckpt")
    from safetensors.torch import load_file

    torch.save(load_file(folder / "model.safetensors"), folder / "pytorch_model.bin")
    (folder / "model.safetensors").unlink()
    with pytest.raises(CheckpointError, match="missing model.safetensors"):
        load_policy(folder)


def test_a_pickled_backbone_is_refused_before_torch_load(tmp_path, monkeypatch, rule):
    """transformers would torch.load tiny_clip/pytorch_model.bin when no safetensors file is there."""
    folder = copy_checkpoint(PUSH_FLOW, tmp_path / "ckpt")
    from safetensors.torch import load_file

    torch.save(load_file(folder / "tiny_clip" / "model.safetensors"), folder / "tiny_clip" / "pytorch_model.bin")
    (folder / "tiny_clip" / "model.safetensors").unlink()
    calls = []
    monkeypatch.setattr(torch, "load", lambda *a, **k: calls.append(a))
    with pytest.raises(CheckpointError, match=r"tiny_clip/pytorch_model.bin: is a pickle-format file"):
        load_policy(folder)
    assert calls == []
    assert all(s.startswith(".") for s in PICKLE_SUFFIXES) and ".pt" in PICKLE_SUFFIXES and ".pkl" in PICKLE_SUFFIXES


def test_a_resnet_checkpoint_does_not_fetch_and_unpickle_imagenet_weights(tmp_path, monkeypatch):
    """DiffusionPolicy builds its ResNet with torchvision's ImageNet weights (a download, then a full
    torch.load) before model.safetensors replaces them; load_policy builds it without them."""
    from lerobot.configs.types import FeatureType, PolicyFeature
    from lerobot.policies.diffusion.configuration_diffusion import DiffusionConfig
    from lerobot.policies.diffusion.modeling_diffusion import DiffusionPolicy
    from lerobot.policies.factory import make_pre_post_processors

    cam = "observation.images.front"
    cfg = DiffusionConfig(
        input_features={"observation.state": PolicyFeature(FeatureType.STATE, (4,)),
                        cam: PolicyFeature(FeatureType.VISUAL, (3, 64, 64))},
        output_features={"action": PolicyFeature(FeatureType.ACTION, (2,))},
        n_obs_steps=1, horizon=8, n_action_steps=4, down_dims=(16, 32), kernel_size=3, n_groups=4,
        diffusion_step_embed_dim=16, num_inference_steps=2, crop_shape=None, pretrained_backbone_weights=None,
        use_group_norm=False, spatial_softmax_num_keypoints=4, device="cpu",
    )
    stats = {k: {"mean": torch.zeros(d), "std": torch.ones(d), "min": -torch.ones(d), "max": torch.ones(d)}
             for k, d in (("observation.state", 4), ("action", 2))}
    stats[cam] = {"mean": torch.full((3, 1, 1), 0.5), "std": torch.full((3, 1, 1), 0.25)}
    folder = tmp_path / "resnet-ckpt"
    policy = DiffusionPolicy(cfg)
    for part in (policy, *make_pre_post_processors(cfg, dataset_stats=stats)):
        part.save_pretrained(folder)
    edit_json(folder / "config.json", lambda d: d.update(pretrained_backbone_weights="ResNet18_Weights.IMAGENET1K_V1"))
    import torchvision.models._api as weights_api

    fetched = []
    monkeypatch.setattr(weights_api, "load_state_dict_from_url", lambda *a, **k: fetched.append(a))
    loaded = load_policy(folder)
    assert fetched == []
    saved = policy.diffusion.state_dict()
    state = loaded.model.state_dict()
    assert any("backbone" in key for key in state) and state.keys() == saved.keys()
    for key, value in state.items():
        assert torch.equal(value, saved[key]), key


def test_auto_map_is_refused(tmp_path, rule):
    folder = copy_checkpoint(PUSH_FLOW, tmp_path / "ckpt")
    edit_json(folder / "tiny_clip" / "tokenizer_config.json",
              lambda d: d.update(auto_map={"AutoTokenizer": ["evil.EvilTokenizer", None]}))
    with pytest.raises(CheckpointError, match=r"tiny_clip/tokenizer_config.json: has auto_map"):
        load_policy(folder)


# --- the guard while lerobot and transformers load (what the files say at load time) --------------------

def test_the_guard_checks_the_step_lerobot_resolves(tmp_path, rule):
    """A file changed after the inspection (or a loader called directly) meets the same rule."""
    from lerobot.processor.pipeline import DataProcessorPipeline

    marker = tmp_path / "pwned"
    folder = insert_step(copy_checkpoint(PUSH, tmp_path / "ckpt"), popen_step(marker))
    original = DataProcessorPipeline.__dict__["_resolve_step_class"]
    with pytest.raises(CheckpointError, match=r"a processor step names class 'subprocess.Popen'"):
        with loading_guard(folder, rule=rule):
            DataProcessorPipeline.from_pretrained(folder, "policy_preprocessor.json")
    assert not marker.exists()
    assert DataProcessorPipeline.__dict__["_resolve_step_class"] is original  # the guard is lifted


def test_the_guard_refuses_remote_code(tmp_path, rule):
    """A tokenizer folder with auto_map and its own module, loaded with trust_remote_code=True."""
    from transformers import AutoTokenizer

    marker = tmp_path / "imported"
    repo = tmp_path / "repo"
    repo.mkdir()
    (repo / "tokenizer_config.json").write_text(json.dumps(
        {"auto_map": {"AutoTokenizer": ["evil_tok.EvilTokenizer", None]}, "tokenizer_class": "EvilTokenizer"}))
    (repo / "evil_tok.py").write_text(f"import pathlib\npathlib.Path({str(marker)!r}).touch()\n"
                                      "from transformers import PreTrainedTokenizer\n"
                                      "class EvilTokenizer(PreTrainedTokenizer):\n    pass\n")
    with pytest.raises(CheckpointError, match=r"asks transformers to import its own Python \(evil_tok.py\)"):
        with loading_guard(repo, rule=rule):
            AutoTokenizer.from_pretrained(str(repo), trust_remote_code=True)
    assert not marker.exists()


def test_the_guard_refuses_pickled_weights(tmp_path, monkeypatch, rule):
    """A backbone named by hub id is downloaded during the load: transformers may not torch.load it."""
    from safetensors.torch import load_file
    from transformers import CLIPTextModel

    repo = tmp_path / "clip"
    shutil.copytree(PUSH_FLOW / "tiny_clip", repo)
    torch.save(load_file(repo / "model.safetensors"), repo / "pytorch_model.bin")
    (repo / "model.safetensors").unlink()
    calls = []
    real_load = torch.load
    monkeypatch.setattr(torch, "load", lambda *a, **k: calls.append(a) or real_load(*a, **k))
    with pytest.raises(CheckpointError, match=r"pytorch_model.bin is not a safetensors file"):
        with loading_guard(repo, rule=rule):
            CLIPTextModel.from_pretrained(str(repo))
    assert calls == []


# --- what ships still loads ----------------------------------------------------------------------------

@pytest.mark.parametrize("folder", SHIPPED, ids=[p.name for p in SHIPPED])
def test_shipped_checkpoints_pass_and_load(folder, rule):
    assert inspect_checkpoint(folder, rule) == []
    policy = load_policy(folder)
    assert policy.spec.horizon > 0 and policy.path == folder


# --- verifiers: matched on fingerprint, feature width and action shape -----------------------------------

def _drop(folder: Path, *keys: str) -> None:
    edit_json(folder / "verifier.json", lambda d: [d["policy"].pop(k) for k in keys])


@pytest.mark.parametrize("kind", ["cfn", "nearest"])
def test_a_pick_place_verifier_is_refused_for_the_push_policy_without_its_fingerprint(tmp_path, kind):
    from policy_steer.steering.taco import load_verifier

    folder = copy_checkpoint(PUSH, tmp_path / "push")
    shutil.copytree(CHECKPOINTS / "pick-place-diffusion" / "verifier", folder / "verifier")
    policy = load_policy(folder)
    with pytest.raises(ConfigError, match="fitted to another policy.*the weights differ"):
        load_verifier(kind, policy)
    _drop(folder / "verifier", "fingerprint")
    with pytest.raises(ConfigError, match=r"fitted to another policy .*16x4 actions, this policy's are 16x3"):
        load_verifier(kind, policy)
    _drop(folder / "verifier", "action_shape")  # nothing left to tell which policy it belongs to
    with pytest.raises(ConfigError, match="does not say which policy it was fitted to"):
        load_verifier(kind, policy)


def test_a_verifier_of_another_feature_width_is_refused(tmp_path):
    """push-flow's verifier (96-d features, 16x3 chunks) beside push-diffusion (192-d, 16x3)."""
    from policy_steer.steering.taco import load_verifier

    folder = copy_checkpoint(PUSH, tmp_path / "push")
    shutil.copytree(PUSH_FLOW / "verifier", folder / "verifier")
    _drop(folder / "verifier", "fingerprint", "feature_dim")
    with pytest.raises(ConfigError, match=r"reads 96-d features, this policy's are 192-d"):
        load_verifier("cfn", load_policy(folder))


def test_a_verifier_without_fingerprint_of_the_same_shapes_loads_with_a_warning(tmp_path, caplog):
    from policy_steer.steering.taco import load_verifier

    folder = copy_checkpoint(PUSH, tmp_path / "push", verifier=True)
    _drop(folder / "verifier", "fingerprint")
    with caplog.at_level(logging.WARNING, logger="policy_steer.steering.taco.storage"):
        assert load_verifier("cfn", load_policy(folder)).name == "cfn"
    assert any("no policy fingerprint" in r.getMessage() for r in caplog.records)


@pytest.mark.parametrize("folder", WITH_VERIFIER, ids=[p.name for p in WITH_VERIFIER])
def test_shipped_verifiers_load_with_their_policies(folder):
    from policy_steer.steering.taco import load_verifier
    from policy_steer.steering.taco.storage import read_info

    policy = load_policy(folder)
    recorded = read_info(folder / "verifier")["policy"]
    assert recorded["action_shape"] == [policy.spec.horizon, policy.spec.action_dim]
    for kind in ("cfn", "nearest"):
        assert load_verifier(kind, policy).name == kind


@pytest.mark.parametrize("source", ["push-diffusion", "push-flow", "smolvla"])
def test_the_feature_width_read_from_the_layers_is_what_sampling_produces(source, flow_checkpoint):
    """storage.policy_feature_width must agree with denoise_with_features, adapter by adapter."""
    from policy_steer.sampler import Sampler
    from policy_steer.steering.taco.features import sample_with_features
    from policy_steer.steering.taco.storage import policy_feature_width

    policy = load_policy(CHECKPOINTS / source if (CHECKPOINTS / source).is_dir() else flow_checkpoint(source))
    obs = {"step": 0, "task": policy.trained_task or "do the task"}
    for key, feature in policy.spec.observation.items():
        obs[key] = np.zeros(feature.shape, np.dtype(feature.dtype))
    policy.reset()
    _, feats = sample_with_features(Sampler(policy), policy.prepare(obs), torch.Generator().manual_seed(0))
    assert policy_feature_width(policy) == feats.shape[-1]
