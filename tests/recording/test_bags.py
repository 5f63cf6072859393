"""ROS 2 bags of real episodes, read back with rosbags' own reader (never our writer's code).

Real parts: the shipped push-diffusion policy with its fitted TACO verifier, the shipped camera policy
reach-image-diffusion, the MuJoCo tasks, the control loop on the virtual clock, rosbag2 folders with
MCAP storage on disk, a real OSError from the kernel (a file-size limit) in a real subprocess.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

REPO = Path(__file__).resolve().parents[2]
PUSH = str(REPO / "checkpoints" / "push-diffusion")
REACH_IMAGE = str(REPO / "checkpoints" / "reach-image-diffusion")


def read_bag(path: Path) -> list[tuple[str, str, int, object]]:
    """(topic, type, bag timestamp, message) in file order, with rosbags' reader and typestore."""
    from rosbags.rosbag2 import Reader
    from rosbags.typesys import Stores, get_typestore

    ts = get_typestore(Stores.ROS2_HUMBLE)
    out = []
    with Reader(path) as reader:
        for conn, t, raw in reader.messages():
            out.append((conn.topic, conn.msgtype, t, ts.deserialize_cdr(raw, conn.msgtype)))
    return out


def stamp_ns(header) -> int:
    return int(header.stamp.sec) * 1_000_000_000 + int(header.stamp.nanosec)


class Tap:
    """A loop observer that keeps what the loop showed it and passes everything on to a recorder."""

    def __init__(self, recorder) -> None:
        self.rec = recorder
        self.frames: dict[int, dict[str, np.ndarray]] = {}
        self.error_step: int | None = None
        self.last_step = -1

    def started(self, context, hz):
        self.rec.started(context, hz)

    def context(self, context, stamp):
        self.rec.context(context, stamp)

    def observed(self, step, obs, stamp):
        self.frames[step] = {k: np.array(v) for k, v in obs.items() if k.startswith("observation.images.")}
        self.rec.observed(step, obs, stamp)

    def chunk(self, record, chunk, stamp):
        self.rec.chunk(record, chunk, stamp)

    def stepped(self, record, executed):
        self.last_step = record.step
        if self.error_step is None and self.rec.error is not None:
            self.error_step = record.step
        self.rec.stepped(record, executed)

    def ended(self, result):
        self.rec.ended(result)


@pytest.fixture(scope="module")
def push_taco():
    from policy_steer.policies.loading import load_policy
    from policy_steer.steered_policy import SteeredPolicy

    return SteeredPolicy.from_method(load_policy(PUSH), "taco", {"candidates": 4})


@pytest.fixture(scope="module")
def taco_bag(push_taco, tmp_path_factory):
    """One recorded TACO episode (M = 4) on push obstacle: (bag folder, the loop's result)."""
    from policy_steer.envs import make
    from policy_steer.recording import BagSink, Recorder
    from policy_steer.runtime.chunk_source import LocalChunkSource
    from policy_steer.runtime.loop import ControlLoop, LoopConfig, VirtualClock
    from policy_steer.runtime.robot import SimRobot

    path = tmp_path_factory.mktemp("bags") / "taco"
    rec = Recorder([BagSink(path)])
    push_taco.keep_candidates = True
    try:  # the first 30 control steps of the episode: three chunks (the whole episode is the benchmark's)
        loop = ControlLoop(SimRobot(make("push", "obstacle")), LocalChunkSource(push_taco, inline=True), VirtualClock("0"),
                           LoopConfig(max_steps=30), observer=rec)
        result = loop.run(seed=0)
    finally:
        push_taco.keep_candidates = False
    stats = rec.close()
    assert stats["error"] is None and stats["dropped"] == 0
    return path, result


def test_taco_bag_reads_back_with_types_counts_and_loop_stamps(taco_bag, push_taco):
    from policy_steer.recording.messages import TOPICS

    path, result = taco_bag
    assert (path / "metadata.yaml").is_file() and list(path.glob("*.mcap")), "a rosbag2 folder with MCAP storage"
    msgs = read_bag(path)
    types = {topic: typ for topic, typ, _, _ in msgs}
    for topic, typ in TOPICS.items():
        assert types.get(topic) == typ, topic
    by = lambda topic: [(t, msg) for tp, _, t, msg in msgs if tp == topic]  # noqa: E731

    # the loop's clock: virtual seconds, step / hz, one joint state per control step
    js = by("/joint_states")
    assert len(js) == result.steps
    assert [t for t, _ in js] == [round(k / 10 * 1e9) for k in range(result.steps)]
    assert all(stamp_ns(m.header) == t for t, m in js)
    assert len(js[0][1].position) == 6  # five arm joints and the gripper
    stamps = [t for _, _, t, _ in msgs]
    assert stamps == sorted(stamps)

    # one marker set per arrived chunk, with M = 4 candidate trajectories and the executed one marked
    chunks = [c for c in result.chunks if c.delivered_step is not None]
    sets = by("/policy_steer/candidates")
    assert len(sets) == len(chunks) == len(by("/policy_steer/chunk")) and len(sets) >= 2
    for (t, arr), rec in zip(sets, chunks):
        assert t == round(rec.delivered_step / 10 * 1e9)
        cands = [mk for mk in arr.markers if mk.ns == "candidates"]
        assert sorted(mk.id for mk in cands) == [0, 1, 2, 3]
        executed = [mk for mk in arr.markers if mk.ns == "executed"]
        assert len(executed) == 1 and executed[0].id == rec.info["winner"]
        winner_line = next(mk for mk in cands if mk.id == rec.info["winner"])
        assert [(p.x, p.y, p.z) for p in winner_line.points] == [(p.x, p.y, p.z) for p in executed[0].points]
        assert len(winner_line.points) == 1 + push_taco.spec.horizon  # the conditioning ee, then one per chunk row
        scores = rec.info["steer"]["taco"]["scores"]
        best = next(mk for mk in cands if mk.id == int(np.argmax(scores)))
        worst = next(mk for mk in cands if mk.id == int(np.argmin(scores)))
        assert best.color.g > best.color.r and worst.color.r > worst.color.g  # green = high count, red = low
        text = next(mk for mk in arr.markers if mk.ns == "text").text
        assert "M=4" in text and "taco: counts=[" in text
        assert any(mk.ns == "obstacles" for mk in arr.markers)  # the obstacle variant's box

    # the numbers for plots: the executed candidate's count and the best, per chunk (labels in the layout)
    figs = by("/policy_steer/figures")
    assert len(figs) == len(chunks)
    for (_, f), rec in zip(figs, chunks):
        labels = [d.label for d in f.layout.dim]
        scores = rec.info["steer"]["taco"]["scores"]
        assert f.data[labels.index("taco_count_executed")] == pytest.approx(scores[rec.info["winner"]])
        assert f.data[labels.index("taco_count_best")] == pytest.approx(max(scores))
        assert f.data[labels.index("candidates")] == 4 and np.isnan(f.data[labels.index("vls_reward_executed")])

    # the measured path, with every chunk and once more at the end: one pose per step, where the ee was
    paths = by("/policy_steer/executed_path")
    assert len(paths) == len(chunks) + 1
    assert [len(p.poses) for _, p in paths[:-1]] == [c.delivered_step + 1 for c in chunks]
    assert len(paths[-1][1].poses) == result.steps
    last = paths[-1][1].poses[-1].pose.position
    assert np.allclose([last.x, last.y, last.z], result.records[-1].ee, atol=1e-6)

    # the chunk as a trajectory: the executed rows, at time_from_start = row / hz
    traj = by("/policy_steer/chunk")[0][1]
    assert traj.joint_names == ["dx", "dy", "dz"]
    assert np.allclose(traj.points[0].positions, result.records[0].action, atol=1e-6)
    assert traj.points[3].time_from_start.nanosec == 300_000_000

    # diagnostics: every chunk's figures; the outcome, in the metadata and on its topic
    diag = [s for _, m in by("/diagnostics") for s in m.status]
    assert sum(s.name == "policy_steer/chunk" for s in diag) == len(chunks)
    assert any(s.name == "policy_steer/recorder" for s in diag)
    episode = json.loads(by("/policy_steer/episode")[0][1].data)
    assert episode["success"] == result.success and episode["steps"] == result.steps


def test_bag_summary_cli_prints_topics_counts_duration_outcome(taco_bag, capsys):
    from policy_steer.cli.main import main

    path, result = taco_bag
    assert main(["bag", "summary", str(path)]) == 0
    out = capsys.readouterr().out
    assert f"over {(result.steps - 1) / 10:.2f} s" in out
    assert "/policy_steer/candidates" in out and "visualization_msgs/msg/MarkerArray" in out
    assert f"{result.steps} steps" in out and ("success" if result.success else "failure") in out
    assert main(["bag", "summary", str(path.parent / "nothing-here")]) == 2
    assert "no such bag folder" in capsys.readouterr().err


def test_existing_bag_folder_is_refused(tmp_path):
    from policy_steer.errors import ConfigError
    from policy_steer.recording import BagSink

    (tmp_path / "old").mkdir()
    (tmp_path / "old" / "keep.txt").write_text("x")
    with pytest.raises(ConfigError, match="exists already; refusing to overwrite"):
        BagSink(tmp_path / "old")
    assert (tmp_path / "old" / "keep.txt").read_text() == "x"


def test_keep_candidates_changes_nothing_it_only_adds(push_taco):
    """The same chunk, winner and scores with and without every candidate in the info."""
    from policy_steer.envs import make

    env = make("push", "obstacle")
    obs, _ = env.reset(seed=3)
    obs = {**obs, "task": "push the block into the target region"}
    chunks = []
    for keep in (False, True):
        push_taco.keep_candidates = keep
        push_taco.start_episode(env.unwrapped.episode_context(3), seed=3)
        chunks.append(push_taco.predict_chunk(obs))
    push_taco.keep_candidates = False
    plain, kept = chunks
    assert np.array_equal(plain.actions, kept.actions)
    assert plain.info["winner"] == kept.info["winner"]
    assert plain.info["steer"]["taco"]["scores"] == kept.info["steer"]["taco"]["scores"]
    assert "candidate_actions" not in plain.info
    every = kept.info["candidate_actions"]
    assert every.shape == (4, *plain.actions.shape)
    assert np.array_equal(every[kept.info["winner"]], kept.actions)


_LOADED: dict[str, object] = {}


def _camera_episode(observer, seed: int = 1):
    """reach-image-diffusion (a 64x64 front camera) on reach moving-goal, the loop on the virtual clock."""
    from policy_steer.envs import make
    from policy_steer.policies.loading import load_policy
    from policy_steer.policies.observation import camera_env_kwargs
    from policy_steer.runtime.sim_loop import RuntimeConfig, run_episode
    from policy_steer.steered_policy import SteeredPolicy

    if "camera" not in _LOADED:  # one load per process (the CLIP towers take seconds)
        _LOADED["camera"] = load_policy(REACH_IMAGE)
    base = _LOADED["camera"]
    policy = SteeredPolicy.from_method(base, "none")
    env = make("reach", "moving-goal", **camera_env_kwargs(base.spec.observation))
    return run_episode(env, policy, RuntimeConfig(), seed=seed, reaction=False, record_steps=True, observer=observer)


def test_camera_frames_decode_to_what_the_policy_saw(tmp_path):
    from policy_steer.recording import BagSink, Recorder

    rec = Recorder([BagSink(tmp_path / "cam")])
    tap = Tap(rec)
    result = _camera_episode(tap)
    assert rec.close()["dropped"] == 0
    images = [(t, m) for topic, typ, t, m in read_bag(tmp_path / "cam") if topic == "/camera/front/image_raw"]
    assert len(images) == result.steps == len(tap.frames)
    for t, img in images:
        step = round(t / 1e8)
        assert img.encoding == "rgb8" and (img.height, img.width) == (64, 64)
        frame = np.asarray(img.data, dtype=np.uint8).reshape(img.height, img.width, 3)
        assert np.array_equal(frame, tap.frames[step]["observation.images.front"])


class SlowBag:
    """A real bag on a disk that takes 20 ms per message (a slow disk)."""

    def __init__(self, path) -> None:
        from policy_steer.recording import BagSink

        self.bag = BagSink(path)
        self.name = self.bag.name

    def write(self, topic, typename, stamp_ns, data):
        time.sleep(0.02)
        self.bag.write(topic, typename, stamp_ns, data)

    def close(self, custom):
        self.bag.close(custom)


@pytest.fixture(scope="module")
def camera_reference():
    """The camera episode without any recording: the actions every recorded run must repeat."""
    return _camera_episode(None)


def test_a_slow_disk_drops_telemetry_with_a_counter_never_an_action(tmp_path, camera_reference):
    from policy_steer.recording import Recorder
    from policy_steer.recording.summary import summarize

    reference = camera_reference
    rec = Recorder([SlowBag(tmp_path / "slow")], queue_size=4)
    result = _camera_episode(rec)
    stats = rec.close()
    assert stats["dropped"] > 0 and stats["error"] is None
    assert [r.action for r in result.records] == [r.action for r in reference.records]  # every action the same
    s = summarize(tmp_path / "slow")
    assert s["outcome"]["recorder_dropped"] == stats["dropped"] > 0  # the count is in the bag, the outcome too
    assert s["outcome"]["steps"] == reference.steps


_FULL_DISK = r"""
import json, os, resource, signal, sys
signal.signal(signal.SIGXFSZ, signal.SIG_IGN)  # the write itself fails (EFBIG), as on a full disk (ENOSPC)
sys.path.insert(0, sys.argv[2])
from tests.recording.test_bags import Tap, _camera_episode
from policy_steer.recording import BagSink, Recorder

lines = []
rec = Recorder([BagSink(sys.argv[1])], say=lambda line: (lines.append(line), print(line, file=sys.stderr)))
resource.setrlimit(resource.RLIMIT_FSIZE, (300_000, resource.RLIM_INFINITY))
tap = Tap(rec)
result = _camera_episode(tap)
stats = rec.close()
print(json.dumps({"steps": result.steps, "error_step": tap.error_step, "actions": [r.action for r in result.records],
                  "error": stats["error"], "lines": lines}))
"""


def test_a_file_size_limit_ends_the_recording_mid_episode_and_the_loop_runs_on(tmp_path, camera_reference):
    """The short version of the test below, in this process: the kernel refuses the bag's write (EFBIG
    under RLIMIT_FSIZE) while the episode runs; the limit and the signal are restored afterwards."""
    import resource
    import signal

    from policy_steer.recording import BagSink, Recorder

    lines: list[str] = []
    rec = Recorder([BagSink(tmp_path / "full")], say=lines.append)
    tap = Tap(rec)
    old_limit = resource.getrlimit(resource.RLIMIT_FSIZE)
    old_handler = signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
    resource.setrlimit(resource.RLIMIT_FSIZE, (300_000, old_limit[1]))
    try:
        result = _camera_episode(tap)
        stats = rec.close()
    finally:
        resource.setrlimit(resource.RLIMIT_FSIZE, old_limit)
        signal.signal(signal.SIGXFSZ, old_handler)
    assert [r.action for r in result.records] == [r.action for r in camera_reference.records]
    assert tap.error_step is not None and tap.error_step < result.steps - 1  # mid-episode; the loop went on
    assert lines == [stats["error"]] and "File too large" in lines[0] and "the robot keeps running" in lines[0]


@pytest.mark.slow
def test_a_full_disk_ends_the_recording_with_one_clear_line_and_the_loop_runs_on(tmp_path, camera_reference):
    env = {**os.environ, "MUJOCO_GL": os.environ.get("MUJOCO_GL", "egl"), "HF_HUB_OFFLINE": "1", "OMP_NUM_THREADS": "1"}
    p = subprocess.run([sys.executable, "-c", _FULL_DISK, str(tmp_path / "full"), str(REPO)], capture_output=True,
                       text=True, env=env, cwd=REPO, timeout=240)
    assert p.returncode == 0, p.stderr[-2000:]
    got = json.loads(p.stdout.strip().splitlines()[-1])
    assert got["steps"] == camera_reference.steps == 80
    assert got["actions"] == [r.action for r in camera_reference.records]  # the robot did exactly the same
    assert got["error_step"] is not None and got["error_step"] < 79  # it failed mid-episode; the loop went on
    assert len(got["lines"]) == 1
    assert "File too large" in got["lines"][0] and "the robot keeps running" in got["lines"][0]
    assert str(tmp_path / "full") in got["lines"][0]


@pytest.mark.slow
def test_vls_particles_keypoints_and_rewards_are_in_the_markers(tmp_path):
    """VLS (B = 4 particles) on push obstacle: each chunk's particles, the scene's keypoints and obstacle,
    and the rewards in the marker text and in /policy_steer/figures."""
    from policy_steer.envs import make
    from policy_steer.policies.loading import load_policy
    from policy_steer.recording import BagSink, Recorder
    from policy_steer.runtime.chunk_source import LocalChunkSource
    from policy_steer.runtime.loop import ControlLoop, LoopConfig, VirtualClock
    from policy_steer.runtime.robot import SimRobot
    from policy_steer.steered_policy import SteeredPolicy

    policy = SteeredPolicy.from_method(load_policy(PUSH), "vls", {"particles": 4})
    policy.keep_candidates = True
    rec = Recorder([BagSink(tmp_path / "vls")])
    loop = ControlLoop(SimRobot(make("push", "obstacle")), LocalChunkSource(policy, inline=True), VirtualClock("0"),
                       LoopConfig(max_steps=13), observer=rec)
    result = loop.run(seed=0)
    rec.close()
    msgs = read_bag(tmp_path / "vls")
    sets = [m for topic, _, _, m in msgs if topic == "/policy_steer/candidates"]
    figs = [m for topic, _, _, m in msgs if topic == "/policy_steer/figures"]
    chunks = [c for c in result.chunks if c.delivered_step is not None]
    assert len(sets) == len(figs) == len(chunks) == 2
    for arr, f, c in zip(sets, figs, chunks):
        assert sorted(mk.id for mk in arr.markers if mk.ns == "particles") == [0, 1, 2, 3]
        assert sum(mk.ns == "keypoints" for mk in arr.markers) >= 1 and any(mk.ns == "obstacles" for mk in arr.markers)
        assert "vls: rewards=[" in next(mk.text for mk in arr.markers if mk.ns == "text")
        labels = [d.label for d in f.layout.dim]
        assert f.data[labels.index("vls_reward_executed")] == pytest.approx(c.info["steer"]["vls"]["reward_executed"])


def test_the_foxglove_layout_reads_topics_and_figures_the_recorder_writes():
    import re

    from policy_steer.recording.messages import FIGURES, TOPICS, camera_topic

    layout = json.loads((REPO / "docs" / "foxglove_layout.json").read_text())
    panels = layout["configById"]
    assert {"3D!policysteer", "Image!policysteer", "Plot!count", "Plot!reward", "Plot!latency"} <= set(panels)
    assert set(panels["3D!policysteer"]["topics"]) <= set(TOPICS)
    assert panels["Image!policysteer"]["imageMode"]["imageTopic"] == camera_topic("front")
    named = {"Plot!count": ("taco_count_executed", "taco_count_best"), "Plot!reward": ("vls_reward_executed", "vls_reward_mean"),
             "Plot!latency": ("latency_ms", "delay_steps")}
    for panel, names in named.items():
        idx = [int(re.fullmatch(r"/policy_steer/figures\.data\[(\d+)\]", p["value"]).group(1)) for p in panels[panel]["paths"]]
        assert [FIGURES[i] for i in idx] == list(names)
    used = set(re.findall(r'"(/[a-z_/]+)', json.dumps(layout)))
    assert used - {"/move_base_simple/goal", "/clicked_point", "/initialpose"} <= set(TOPICS) | {camera_topic("front")}


def test_trajectories_follow_the_action_space_the_robot_description_states():
    """delta rows integrate (clipped to max_step) from the conditioning ee, absolute rows are the target,
    joint actions draw no trajectory and say so; read back through rosbags' typestore."""
    from rosbags.typesys import Stores, get_typestore

    from policy_steer.recording import messages as m
    from policy_steer.types import RobotDescription

    ts = get_typestore(Stores.ROS2_HUMBLE)
    layout = {"ee_pos": slice(0, 3)}
    actions = np.array([[0.05, 0.0, 0.0], [0.01, 0.02, 0.0]], dtype=np.float32)
    info = {"candidate_actions": np.stack([actions, -actions]), "winner": 1, "steer": {"taco": {"scores": [1.0, 2.0]}}}

    def lines(mode: str):
        robot = RobotDescription(action_mode=mode, state_layout=layout, robot_state_dim=3, max_step=0.03)
        raw = m.serialize(m.candidate_markers(0.0, -actions, info, np.array([0.1, 0.2, 0.3]), robot, None),
                          "visualization_msgs/msg/MarkerArray")
        return ts.deserialize_cdr(raw, "visualization_msgs/msg/MarkerArray").markers

    delta = {mk.id: [(p.x, p.y, p.z) for p in mk.points] for mk in lines("delta") if mk.ns == "candidates"}
    assert np.allclose(delta[0], [(0.1, 0.2, 0.3), (0.13, 0.2, 0.3), (0.14, 0.22, 0.3)])  # 0.05 clipped to 0.03
    absolute = {mk.id: [(p.x, p.y, p.z) for p in mk.points] for mk in lines("absolute") if mk.ns == "candidates"}
    assert np.allclose(absolute[1][1:], -actions)
    joint = lines("joint")
    assert not [mk for mk in joint if mk.ns in ("candidates", "executed")]
    assert "no end-effector trajectories" in next(mk.text for mk in joint if mk.ns == "text")


def test_without_the_ros_extra_recording_is_one_clear_line(tmp_path):
    """A machine without rosbags: a process that records nothing still starts, and asking for a bag says
    which extra to install (rosbags hidden from a fresh interpreter)."""
    import subprocess
    import sys

    code = (
        "import sys; sys.modules['rosbags'] = None\n"
        "from policy_steer.recording.options import check_recording_options\n"
        "check_recording_options(None, None, '127.0.0.1', False)\n"
        "from policy_steer.errors import ConfigError\n"
        "try:\n"
        "    from policy_steer.recording import BagSink\n"
        "except ConfigError as e:\n"
        "    print(e)\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == 'recording needs rosbags, which is not installed: pip install "policy-steer[ros]"'
