"""TACO end to end on the tiny DiffusionPolicy: fit-verifier, the verifier folder, selection, bad datasets.

The tiny policy has random weights, so these tests check the plumbing (one prepare per chunk, M
different candidates, argmax executed, every count recorded, files, errors). That a fitted count
separates recorded from perturbed chunks is checked on a real task in test_taco_real.py.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch

from policy_steer.cli.main import main as cli
from policy_steer.errors import ConfigError, DatasetError
from policy_steer.policies import load_policy
from policy_steer.policies.loading import CheckpointMeta
from policy_steer.steered_policy import SteeredPolicy
from policy_steer.steering.base import Strategy
from policy_steer.steering.registry import build_steering, get_method
from policy_steer.steering.taco import RandomVerifier, TacoSelection, Verifier, load_verifier
from policy_steer.steering.taco.fit import Config, fit_verifier
from policy_steer.steering.taco.storage import read_info
from policy_steer.types import EpisodeContext
from tests.fixtures.tiny_policies import ACTION_DIM, ENV_DIM, STATE_DIM

INSTRUCTION = "reach the goal"


def make_dataset(root: Path, episodes: int = 4, length: int = 20, action_dim: int = ACTION_DIM,
                 instruction: str = INSTRUCTION, seed: int = 0) -> Path:
    """A small reach-like LeRobotDataset with the tiny policy's features (state 10, env 6, action 3)."""
    from lerobot.datasets.lerobot_dataset import LeRobotDataset

    feats = {
        "observation.state": {"dtype": "float32", "shape": (STATE_DIM,), "names": None},
        "observation.environment_state": {"dtype": "float32", "shape": (ENV_DIM,), "names": None},
        "action": {"dtype": "float32", "shape": (action_dim,), "names": None},
    }
    ds = LeRobotDataset.create(f"local/{root.name}", fps=10, features=feats, root=root, use_videos=False)
    rng = np.random.default_rng(seed)
    for _ in range(episodes):
        pos, goal = rng.uniform(-1, 1, 3), rng.uniform(-1, 1, 3)
        for _ in range(length):
            a = np.clip(goal - pos, -0.3, 0.3) / 0.3
            state = np.zeros(STATE_DIM, np.float32)
            state[:3], state[3:6] = pos, goal - pos
            env = np.zeros(ENV_DIM, np.float32)
            env[:3] = goal
            act = np.zeros(action_dim, np.float32)
            act[:3] = a[:action_dim]
            ds.add_frame({"observation.state": state, "observation.environment_state": env, "action": act,
                          "task": instruction})
            pos = pos + 0.15 * a
        ds.save_episode()
    ds.finalize()
    return root


def small_fit(policy: Path, dataset: Path, out: Path, **kw) -> Config:
    opts = dict(policy=str(policy), dataset=str(dataset), out=str(out), samples=2, max_frames=40, steps=60,
                eval_frames=16, batch_rows=64, width=16, depth=1, progress=False)
    opts.update(kw)
    return Config(**opts)


@pytest.fixture(scope="module")
def ckpt(tiny_diffusion_dir: Path, tmp_path_factory) -> Path:
    """The tiny checkpoint, with policy_steer.json naming the instruction it was 'trained' on."""
    folder = tmp_path_factory.mktemp("taco") / "tiny-diffusion"
    shutil.copytree(tiny_diffusion_dir, folder)
    CheckpointMeta(task=None, extra={"instruction": INSTRUCTION}).write(folder)
    return folder


@pytest.fixture(scope="module")
def dataset(tmp_path_factory) -> Path:
    return make_dataset(tmp_path_factory.mktemp("taco_data") / "reach")


@pytest.fixture(scope="module")
def fitted(ckpt: Path, dataset: Path) -> tuple[Path, dict]:
    """The verifier of the tiny checkpoint, in its default place <checkpoint>/verifier."""
    info = fit_verifier(small_fit(ckpt, dataset, ckpt / "verifier", held_out=0.25))
    return ckpt / "verifier", info


def _obs(step: int = 0) -> dict:
    rng = np.random.default_rng(step)
    return {"observation.state": rng.standard_normal(STATE_DIM).astype(np.float32),
            "observation.environment_state": rng.standard_normal(ENV_DIM).astype(np.float32),
            "task": INSTRUCTION, "step": step}


class Spy(Strategy):
    """Keeps the initial noise and the finished candidates of the last run (selects nothing)."""

    name = "spy"

    def begin(self, run):
        self.noise = run.x.clone()

    def score(self, run, x0):
        self.x0 = x0.clone()
        return None


# --- fitting ------------------------------------------------------------------------------------------

def test_fit_writes_the_verifier_folder_with_its_report(fitted):
    folder, info = fitted
    assert sorted(p.name for p in folder.iterdir()) == ["cfn.safetensors", "nearest.safetensors", "verifier.json"]
    on_disk = read_info(folder)
    assert on_disk["policy"]["feature_dim"] == info["policy"]["feature_dim"] > 0
    assert on_disk["policy"]["fingerprint"]
    assert on_disk["policy"]["action_shape"] == [info["policy"]["action_shape"][0], ACTION_DIM]  # [H, A], checked at load
    assert on_disk["policy"]["feature_dim"] == on_disk["cfn"]["in_dim"]
    held = on_disk["held_out"]
    for name in ("cfn", "nearest"):
        for key in ("perturbed", "candidates"):
            assert 0.0 <= held[name][key] <= 1.0
    assert on_disk["search"]["samples"] == 2 and on_disk["search"]["frames"] == 40
    assert sum(p.stat().st_size for p in folder.iterdir()) < 400_000


def test_fit_verifier_command_prints_the_auc(ckpt, dataset, tmp_path, capsys):
    out = tmp_path / "v"
    code = cli(["fit-verifier", "--policy", str(ckpt), "--dataset", str(dataset), "--out", str(out), "--samples", "2",
                "--max_frames", "24", "--steps", "20", "--eval_frames", "8", "--width", "8", "--depth", "1",
                "--held_out", "0.25", "--progress", "false"])
    assert code == 0
    printed = capsys.readouterr().out
    assert "held-out AUC" in printed and "cfn" in printed and "nearest" in printed
    assert json.loads((out / "verifier.json").read_text())["held_out"]["cfn"]["perturbed"] is not None
    # an existing verifier is not overwritten unless asked
    assert cli(["fit-verifier", "--policy", str(ckpt), "--dataset", str(dataset), "--out", str(out)]) == 2


# --- bad datasets: a clear DatasetError and nothing written -------------------------------------------

def _empty_dataset(root: Path) -> Path:
    from lerobot.datasets.lerobot_dataset import LeRobotDataset

    feats = {"observation.state": {"dtype": "float32", "shape": (STATE_DIM,), "names": None},
             "action": {"dtype": "float32", "shape": (ACTION_DIM,), "names": None}}
    LeRobotDataset.create("local/empty", fps=10, features=feats, root=root, use_videos=False).finalize()
    return root


@pytest.mark.parametrize("kind, message", [
    ("missing", "not found"),
    ("not_a_dataset", "not a LeRobotDataset"),
    ("empty", "empty"),
    ("action_dim", "4-D actions"),
    ("other_task", "not of the policy's task"),
])
def test_bad_datasets_fail_clearly_and_write_nothing(ckpt, tmp_path, kind, message):
    root = tmp_path / kind
    if kind == "not_a_dataset":
        root.mkdir()
        (root / "notes.txt").write_text("hello")
    elif kind == "empty":
        _empty_dataset(root)
    elif kind == "action_dim":
        make_dataset(root, episodes=2, length=8, action_dim=4)
    elif kind == "other_task":
        make_dataset(root, episodes=2, length=8, instruction="push the block into the target region")
    out = tmp_path / "out" / "verifier"
    with pytest.raises(DatasetError, match=message):
        fit_verifier(small_fit(ckpt, root, out))
    assert not out.exists()
    assert not out.parent.exists() or not any(out.parent.iterdir())  # no staging leftovers either
    # the command: one line on stderr, exit code 2
    assert cli(["fit-verifier", "--policy", str(ckpt), "--dataset", str(root), "--out", str(out)]) == 2
    assert not out.exists()


# --- selection -----------------------------------------------------------------------------------------

def test_taco_is_registered_with_its_axes():
    m = get_method("taco")
    assert m.axes == ("candidates", "verifier")


def test_candidates_come_from_one_prepare_and_the_argmax_is_executed(ckpt, fitted):
    policy = load_policy(ckpt)
    calls = {"prepare": 0, "expand": []}
    prepare, expand = policy.prepare, policy.expand

    def counting_prepare(obs):
        calls["prepare"] += 1
        return prepare(obs)

    def counting_expand(ctx, n):
        calls["expand"].append(n)
        return expand(ctx, n)

    policy.prepare, policy.expand = counting_prepare, counting_expand
    setup = build_steering(policy, "taco", {"candidates": 8, "verifier": "cfn", "verifier_path": None,
                                            "fixed_noise": False})
    spy = Spy()
    sp = SteeredPolicy(policy, setup.strategies + [spy], seed=0)
    chunk = sp.predict_chunk(_obs())
    assert calls == {"prepare": 1, "expand": [8]}
    x0 = spy.x0
    assert x0.shape[0] == 8
    flat = x0.reshape(8, -1)
    assert torch.cdist(flat, flat)[~torch.eye(8, dtype=torch.bool)].min() > 1e-3  # all different
    scores = chunk.info["steer"]["taco"]["scores"]
    assert len(scores) == 8 and all(s > 0 for s in scores)  # every candidate's count
    winner = int(np.argmax(scores))
    assert chunk.info["winner"] == winner
    expected = policy.unnormalize_actions(x0[winner, policy.chunk_slice]).numpy()
    np.testing.assert_allclose(chunk.actions, expected, rtol=1e-5, atol=1e-6)
    assert chunk.info["steer"]["taco"]["verifier"] == "cfn"


class Constant(Verifier):
    name = "constant"
    needs_features = False

    def score(self, features, chunks):
        return torch.ones(chunks.shape[0])


def test_ties_go_to_the_lowest_index(ckpt):
    policy = load_policy(ckpt)
    sp = SteeredPolicy(policy, [TacoSelection(Constant(), 5)], seed=0)
    assert sp.predict_chunk(_obs()).info["winner"] == 0


def test_fresh_noise_by_default_fixed_noise_as_an_option(ckpt):
    policy = load_policy(ckpt)
    for fixed in (False, True):
        spy = Spy()
        sp = SteeredPolicy(policy, [TacoSelection(RandomVerifier(), 4, fixed_noise=fixed), spy], seed=0)
        sp.predict_chunk(_obs(0))
        first = spy.noise
        sp.predict_chunk(_obs(1))
        assert torch.equal(first, spy.noise) == fixed
        assert first.shape[0] == 4 and not torch.equal(first[0], first[1])  # different candidates either way


def test_verifiers_compare_on_the_same_candidates(ckpt, fitted):
    policy = load_policy(ckpt)
    cfn, nearest = load_verifier("cfn", policy), load_verifier("nearest", policy)
    sp = SteeredPolicy(policy, [TacoSelection(cfn, 6, also_score=[nearest, RandomVerifier(3)])], seed=0)
    info = sp.predict_chunk(_obs()).info["steer"]["taco"]
    assert len(info["scores"]) == len(info["nearest_scores"]) == len(info["random_scores"]) == 6
    assert all(s <= 0 for s in info["nearest_scores"])  # minus a distance


def test_random_verifier_is_reproducible_per_episode(ckpt):
    policy = load_policy(ckpt)
    sp = SteeredPolicy(policy, [TacoSelection(RandomVerifier(), 8)], seed=0)
    runs = []
    for _ in range(2):
        sp.start_episode(EpisodeContext(), seed=7)
        runs.append([sp.predict_chunk(_obs(k)).info["winner"] for k in range(3)])
    assert runs[0] == runs[1]


# --- the verifier folder -----------------------------------------------------------------------------

def test_verifier_round_trip_and_policy_check(ckpt, fitted, tmp_path, tiny_diffusion_dir):
    folder, _ = fitted
    policy = load_policy(ckpt)
    v = load_verifier("cfn", policy)
    feats = torch.randn(5, read_info(folder)["policy"]["feature_dim"])
    np.testing.assert_allclose(v.score(feats, None).numpy(), load_verifier("cfn", policy, folder).score(feats, None).numpy())
    # a verifier fitted to another policy is refused
    other = tmp_path / "other"
    from tests.fixtures.tiny_policies import build_tiny_diffusion

    build_tiny_diffusion(other, seed=1)
    with pytest.raises(ConfigError, match="another policy"):
        load_verifier("cfn", load_policy(other), folder)
    # no verifier folder: the error says how to make one
    with pytest.raises(ConfigError, match="fit-verifier"):
        build_steering(load_policy(other), "taco", {"candidates": 4, "verifier": "cfn"})
    # random needs no folder
    assert isinstance(build_steering(load_policy(other), "taco", {"candidates": 4, "verifier": "random"}).strategies[0],
                      TacoSelection)


# --- the benchmark ---------------------------------------------------------------------------------------

def test_bench_cells_record_the_taco_axes(tmp_path):
    """A one-episode bench of a tiny push-shaped policy: each (M, verifier) cell is a runs entry."""
    from policy_steer.bench.config import BenchConfig
    from policy_steer.bench.runner import run_bench
    from policy_steer.config import IntList, StrList
    from policy_steer.envs.recording import Config as RecordConfig
    from policy_steer.envs.recording import record
    from tests.fixtures.tiny_policies import build_tiny_diffusion

    ckpt = build_tiny_diffusion(tmp_path / "tiny-push", state_dim=19, env_state_dim=10, action_dim=3, n_obs_steps=1)
    CheckpointMeta(task="push").write(ckpt)
    record(RecordConfig(task="push", episodes=2, out=str(tmp_path / "demos"), progress=False))
    fit_verifier(small_fit(ckpt, tmp_path / "demos", ckpt / "verifier", held_out=0.0))
    runs = run_bench(BenchConfig(
        task=StrList(["push"]), policy=StrList([str(ckpt)]), steer=StrList(["taco"]), candidates=IntList([1, 2]),
        verifier=StrList(["cfn", "random"]), episodes=1, workers=1, out=str(tmp_path / "bench"), plots=False,
        quiet=True,
    ))
    cells = {(r["steer"], r["candidates"], r["verifier"]) for r in runs}
    assert cells == {("taco", 1, "cfn"), ("taco", 2, "cfn"), ("taco", 1, "random"), ("taco", 2, "random")}
    on_disk = json.loads((tmp_path / "bench" / "results.json").read_text())["runs"]
    assert {r["verifier"] for r in on_disk} == {"cfn", "random"}
    assert all("taco.best_score" in r["steer_figures"] for r in on_disk)


# --- flow-matching adapters (and a camera) -----------------------------------------------------------------

def make_dataset_for(policy, root: Path, episodes: int = 2, length: int = 8, instruction: str = INSTRUCTION) -> Path:
    """Random-walk demonstrations with exactly the features ``policy`` reads (images as uint8 HWC)."""
    from lerobot.datasets.lerobot_dataset import LeRobotDataset

    feats = {}
    for key, f in policy.spec.observation.items():
        if f.dtype == "|u1":
            feats[key] = {"dtype": "image", "shape": tuple(f.shape), "names": ["height", "width", "channels"]}
        else:
            feats[key] = {"dtype": "float32", "shape": tuple(f.shape), "names": None}
    feats["action"] = {"dtype": "float32", "shape": (policy.spec.action_dim,), "names": None}
    ds = LeRobotDataset.create(f"local/{root.name}", fps=10, features=feats, root=root, use_videos=False)
    rng = np.random.default_rng(0)
    for _ in range(episodes):
        for _ in range(length):
            frame = {k: (rng.integers(0, 256, f["shape"], dtype=np.uint8) if f["dtype"] == "image"
                         else rng.standard_normal(f["shape"]).astype(np.float32)) for k, f in feats.items()}
            ds.add_frame({**frame, "task": instruction})
        ds.save_episode()
    ds.finalize()
    return root


@pytest.mark.parametrize("kind", ["dit-flow", "pi0-camera"])
def test_flow_policies_fit_and_select(tmp_path, kind):
    from tests.policies.flow_checkpoints import build_tiny_dit, build_tiny_pi

    ckpt = build_tiny_dit(tmp_path / "ckpt") if kind == "dit-flow" else build_tiny_pi(tmp_path / "ckpt", "pi0")
    policy = load_policy(ckpt)
    data = make_dataset_for(policy, tmp_path / "demos")
    info = fit_verifier(small_fit(ckpt, data, ckpt / "verifier", max_frames=8, eval_frames=6, held_out=0.5), policy=policy)
    assert info["policy"]["family"] == "flow" and info["held_out"]["cfn"]["perturbed"] is not None
    prepared = []
    prepare = policy.prepare
    policy.prepare = lambda obs: prepared.append(1) or prepare(obs)
    sp = SteeredPolicy(policy, build_steering(policy, "taco", {"candidates": 4, "verifier": "cfn"}).strategies, seed=0)
    from tests.policies.flow_checkpoints import make_obs

    chunk = sp.predict_chunk(make_obs(policy.spec, task=INSTRUCTION))
    assert len(prepared) == 1 and len(chunk.info["steer"]["taco"]["scores"]) == 4
    assert chunk.actions.shape == (policy.spec.horizon, policy.spec.action_dim)


class Inject(Strategy):
    """Starts the sampler from given initial noise (selects nothing)."""

    name = "inject"

    def __init__(self, noise: torch.Tensor) -> None:
        self.noise = noise

    def begin(self, run):
        run.x = self.noise.clone()


@pytest.mark.parametrize("kind", ["diffusion", "dit-flow"])
def test_each_batched_candidate_is_the_chunk_one_sample_gives_from_its_noise(tmp_path, kind):
    """Selection among M candidates can only be judged against M = 1 if the candidates are M independent
    draws of the policy's own chunk: no row may depend on the others (batch-coupled normalisation,
    a wrong expand). Row i of the batched run must equal a single run started from row i's noise
    (deterministic samplers: DDIM as the shipped diffusion policies, flow Euler)."""
    if kind == "diffusion":
        from tests.fixtures.tiny_policies import build_tiny_diffusion

        policy, obs = load_policy(build_tiny_diffusion(tmp_path / "ddim", scheduler="DDIM")), _obs()
    else:
        from tests.policies.flow_checkpoints import build_tiny_dit, make_obs

        policy = load_policy(build_tiny_dit(tmp_path / "ckpt"))
        obs = make_obs(policy.spec, task=INSTRUCTION)
    spy = Spy()
    SteeredPolicy(policy, [TacoSelection(RandomVerifier(), 6), spy], seed=0).predict_chunk(obs)
    batch_noise, batch_x0 = spy.noise, spy.x0
    assert batch_noise.shape[0] == 6
    for i in range(6):
        one = Spy()
        SteeredPolicy(policy, [Inject(batch_noise[i:i + 1]), one], seed=1).predict_chunk(obs)
        torch.testing.assert_close(one.x0[0], batch_x0[i], rtol=1e-4, atol=1e-5)
