"""A simulated task as a driver behind the same safety layer as an arm (no network here).

Property: whatever chunks arrive (NaN, infinities, huge values) and whatever the loop asks for at a
step (a validated row, its own hold, garbage), every action that reaches ``env.step`` is finite, at
most the task's step per axis, and aims inside the episode's workspace box; a non-finite or
unvalidated action never reaches the simulator (a zero step does). A row inside the bounds reaches it
as the very same numbers (the benchmark's episode, bit for bit). A dry run never steps the task.
"""

from __future__ import annotations

import math

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from policy_steer.hardware.chunk_guard import ChunkRejected
from policy_steer.hardware.drivers.sim_task import SimTaskArm
from policy_steer.hardware.errors import SafetyError
from policy_steer.hardware.observation import ObservationMap
from policy_steer.hardware.safety import EXEC, HOLD, SafetyLayer
from policy_steer.hardware.spaces import make_space
from policy_steer.types import OBS_ENV_STATE, OBS_STATE, TASK, Chunk

ARMS = {task: SimTaskArm(task, "obstacle") for task in ("push", "pick-place")}  # one env each; episodes reset them


def layer(task: str, seed: int = 0, dry_run: bool = False) -> SafetyLayer:
    arm = ARMS[task]
    arm.connect()
    space = make_space("auto", arm, arm.control_hz, arm.action_dim)
    s = SafetyLayer(arm, space, ObservationMap(arm, "native", instruction=arm.instruction), use_watchdog=False,
                    dry_run=dry_run)
    s.reset(seed=seed)
    arm.sent.clear()
    return s


nasty = st.one_of(st.floats(-0.2, 0.2), st.floats(allow_nan=True, allow_infinity=True),
                  st.sampled_from([math.nan, math.inf, -math.inf, 1e30, -1e300, 0.03, -0.03]))


@st.composite
def episodes(draw, action_dim: int):
    events = []
    for _ in range(draw(st.integers(1, 12))):
        kind = draw(st.sampled_from(["chunk", "row", "row", "other"]))
        if kind == "chunk":
            h = draw(st.integers(1, 5))
            rows = draw(st.lists(st.lists(nasty, min_size=action_dim, max_size=action_dim), min_size=h, max_size=h))
            with np.errstate(over="ignore"):
                events.append(("chunk", np.array(rows, dtype=np.float64)))
        elif kind == "row":
            events.append(("row", draw(st.integers(0, 100))))
        else:
            with np.errstate(over="ignore"):
                events.append(("other", np.array(draw(st.lists(nasty, min_size=action_dim, max_size=action_dim)), np.float32)))
    return events


@pytest.mark.parametrize("task", ["push", "pick-place"])
def test_no_bad_action_reaches_the_simulator(task):
    @settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.too_slow])
    @given(events=episodes(ARMS[task].action_dim))
    def prop(events):
        s = layer(task)
        arm = s.arm
        lim = arm.limits
        rows: list[np.ndarray] = []
        for kind, value in events:
            if kind == "chunk":
                try:
                    with np.errstate(over="ignore"):
                        rows += list(s.guard_.admit(Chunk(value, 0), 0.0, 0.0).actions)
                except ChunkRejected:
                    with np.errstate(over="ignore"):
                        assert not np.all(np.isfinite(value.astype(np.float32)))
                continue
            s.observe()
            ee = arm.env.unwrapped.ee_position()
            n_sent = len(arm.sent)
            action = (rows[value % len(rows)] if rows else np.zeros(arm.action_dim, np.float32)) if kind == "row" else value
            validated = kind == "row" and bool(rows) and s.guard_.rows.find(action) is not None
            s.act(action)
            rec = s.records[-1]
            if arm.episode_over and len(arm.sent) == n_sent:
                continue  # the episode had ended (a collision): the task takes no more commands
            sent = arm.sent[-1]
            assert len(arm.sent) == n_sent + 1 and sent.shape == (arm.action_dim,)
            assert np.all(np.isfinite(sent))
            assert np.all(np.abs(sent[:3]) <= arm.max_step + 1e-7)
            assert lim.in_workspace(ee + sent[:3], 1e-6)
            if not validated:  # the loop's own proposal, or garbage: never executed, a zero step instead
                assert rec.decision == HOLD and np.all(sent[:3] == 0)
            elif rec.decision == EXEC and not rec.notes:
                np.testing.assert_array_equal(sent[:3], action[:3])  # the row itself, untouched

    prop()


def test_rows_inside_the_bounds_reach_the_simulator_bit_for_bit():
    s = layer("pick-place", seed=3)
    arm = s.arm
    rng = np.random.default_rng(0)
    rows = rng.uniform(-0.025, 0.025, (8, 4)).astype(np.float32)
    rows[:, 3] = rng.choice([-1.0, 1.0], 8)
    chunk = s.guard_.admit(Chunk(rows, 0), 0.0, 0.0)
    assert chunk.info["safety"]["clamped"] == 0
    for row in chunk.actions:
        s.observe()
        s.act(row)
        assert s.records[-1].decision == EXEC and s.records[-1].notes is None
        np.testing.assert_array_equal(arm.sent[-1], row)
        np.testing.assert_array_equal(s.last_executed, row) and s.last_intervention is None


def test_an_out_of_bounds_step_is_clamped_on_arrival_and_a_nan_is_held():
    s = layer("push", seed=1)
    arm = s.arm
    chunk = s.guard_.admit(Chunk(np.array([[0.5, -0.5, 0.01]], np.float32), 0), 0.0, 0.0)
    np.testing.assert_allclose(chunk.actions[0], [0.03, -0.03, 0.01])  # push's largest step per axis
    assert s.log.counts["clamp:chunk"] == 1
    s.observe()
    s.act(chunk.actions[0])
    np.testing.assert_allclose(arm.sent[-1], [0.03, -0.03, 0.01])
    with pytest.raises(ChunkRejected, match="non-finite"):
        s.guard_.admit(Chunk(np.array([[np.nan, 0.0, 0.0]], np.float32), 1), 0.0, 0.0)
    s.observe()
    s.act(np.array([np.nan, 0.0, 0.0], np.float32))
    assert s.records[-1].reason == "reject:nonfinite" and np.all(arm.sent[-1] == 0)
    assert s.last_intervention == "reject:nonfinite"


def test_the_workspace_is_the_episodes_own():
    """shifted-surface moves the table: the workspace box the safety layer enforces follows it."""
    arm = SimTaskArm("push", "shifted-surface")
    arm.connect()
    boxes = set()
    for seed in range(3):
        arm.start_episode(seed)
        low, high = arm.env.unwrapped.workspace()
        np.testing.assert_allclose(arm.limits.workspace_low, low)
        np.testing.assert_allclose(arm.limits.workspace_high, high)
        boxes.add(round(float(low[2]), 6))
    assert len(boxes) > 1
    arm.disconnect()


def test_a_dry_run_never_steps_the_task():
    s = layer("push", seed=2, dry_run=True)
    arm = s.arm
    first = s.observe()[OBS_STATE].copy()
    chunk = s.guard_.admit(Chunk(np.full((4, 3), 0.02, np.float32), 0), 0.0, 0.0)
    for row in chunk.actions:
        s.observe()
        s.act(row)
        assert s.records[-1].decision == EXEC  # checked and recorded as executed ...
    assert len(arm.sent) == 0 and arm.steps == 0  # ... but nothing reached the simulator
    np.testing.assert_array_equal(s.observe()[OBS_STATE], first)


def test_the_driver_gives_the_tasks_observation_context_and_description():
    s = layer("push", seed=5)
    arm = s.arm
    obs = s.observe()
    u = arm.env.unwrapped
    np.testing.assert_array_equal(obs[OBS_STATE], u.observe()[OBS_STATE])
    np.testing.assert_array_equal(obs[OBS_ENV_STATE], u.observe()[OBS_ENV_STATE])
    assert obs[TASK] == u.instruction
    assert s.description.action_mode == "delta" and s.description.rollout is not None  # the model estimator
    ctx = s.context(5)
    assert ctx.task == "push" and ctx.variant == "obstacle" and ctx.seed == 5
    assert ctx.scene is not None and any(o.kind == "obstacle" for o in ctx.scene.objects)
    assert ctx.robot.to_dict() == s.description.to_dict() and s.dynamic_scene


def test_a_policy_that_does_not_fit_the_task_is_one_clear_error():
    from policy_steer.types import FeatureSpec, PolicySpec

    arm = ARMS["push"]
    spec = PolicySpec(name="x", family="diffusion", horizon=16, action_dim=4, n_action_steps=8, num_steps=10,
                      control_hz=10.0, observation={OBS_STATE: FeatureSpec("<f4", (12,))})
    with pytest.raises(SafetyError, match=r"does not fit push/obstacle: .*\[12\] for the policy, \[19\] in task 'push'.*4 dims"):
        arm.check_policy(spec)
    with pytest.raises(SafetyError, match="takes ee_delta actions only"):
        make_space("joint", arm, 10.0, 3)


def test_sim_robot_runs_the_variant_at_the_parameters_it_is_given():
    """``sim-robot --variant_params``: the simulated task and the scene in its context are built at that
    setting (as ``bench --variant_params`` builds them); a parameter the variant lacks is one clear error."""
    from policy_steer.errors import ConfigError
    from policy_steer.hardware.host import RobotHost, SimRobotConfig

    def arm(params: str) -> SimTaskArm:
        return RobotHost(SimRobotConfig(task="pick-place", variant="obstacle", variant_params=params))._make_arm()

    low = arm("obstacle.height=0.08")
    assert low.env.unwrapped.variant_params.height == 0.08
    low.start_episode(seed=3)
    wall = next(o for o in low.episode_context(3).scene.objects if o.kind == "obstacle")
    assert wall.position[2] + wall.half_size[2] == pytest.approx(0.08, abs=1e-9)
    assert arm("").env.unwrapped.variant_params.height == 0.17  # the default wall
    with pytest.raises(ConfigError, match=r"obstacle\.height = 0\.5 is outside its range"):
        arm("obstacle.height=0.5")
    with pytest.raises(ConfigError, match="belongs to variant 'shifted-surface'"):
        arm("surface.scale=2")
