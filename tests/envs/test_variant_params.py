"""Issue 18: every variant's parameters are a typed config whose defaults are the old constants.

- the unsteered sync baseline at default parameters gives, episode for episode (success, steps, SHA-256
  of the executed actions), the records the committed code gave before parameters existed
  (tests/fixtures/variant_defaults_e54c6b6.json, made at commit e54c6b6);
- a parameter changes the world the way its documentation says (a taller wall is taller in the
  simulator and in the scene; the table shift scales; the base layout of a seed does not move);
- bad input is one ConfigError naming the parameter and its range (or the variant it belongs to).
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from policy_steer.cli.main import main
from policy_steer.envs import make
from policy_steer.envs.tasks.pick_place import PickPlaceEnv, WallObstacle
from policy_steer.envs.tasks.push import PushEnv
from policy_steer.envs.variants import Clutter, MovingGoal, SurfaceShift, resolve_params
from policy_steer.errors import ConfigError

FIXTURE = Path(__file__).resolve().parents[1] / "fixtures" / "variant_defaults_e54c6b6.json"


def _records(out: Path) -> dict[tuple[str, str, int], tuple]:
    got = {}
    for line in (out / "episodes.jsonl").read_text().splitlines()[1:]:
        r = json.loads(line)
        c = r["cell_spec"]
        got[(c["task"], c["variant"], r["seed"])] = (r["outcome"]["success"], r["outcome"]["steps"], r["actions"]["sha256"])
    return got


def _replay(tmp_path: Path, tasks: str, variants: str, seeds: int, steer: str = "none", fixture: Path = FIXTURE) -> None:
    """Run ``steer`` on the first ``seeds`` seeds and compare every episode with the committed ``fixture``."""
    ref = {(e["task"], e["variant"], e["seed"]): (e["success"], e["steps"], e["actions_sha256"])
           for e in json.loads(fixture.read_text())["episodes"]}
    out = tmp_path / steer
    assert main(["bench", "--task", tasks, "--variant", variants, "--steer", steer, "--episodes", str(seeds),
                 "--workers", "1", "--quiet", "true", "--plots", "false", "--out", str(out)]) == 0
    got = _records(out)
    assert got and set(got) <= set(ref)
    assert {k: ref[k] for k in got} == got


def test_default_parameters_replay_the_committed_records(tmp_path):
    # every variant with parameters, one seed each, on the two tasks with a shipped policy per variant
    _replay(tmp_path, "push,pick-place", "obstacle,shifted-surface,clutter,moving-goal", 1)


@pytest.mark.slow
def test_default_parameters_replay_every_committed_record(tmp_path):
    _replay(tmp_path, "reach,push,pick-place", "all", 6)


def test_a_taller_wall_is_taller_in_the_simulator_and_in_the_scene():
    scenes = {}
    for h in (0.08, 0.17, 0.22):
        env = make("pick-place", "obstacle", variant_params={"obstacle.height": h}, render_mode=None)
        env.reset(seed=3)
        wall = next(o for o in env.unwrapped.scene().objects if o.kind == "obstacle")
        assert wall.position[2] + wall.half_size[2] == pytest.approx(h, abs=1e-9)  # top above the table top (z = 0)
        scenes[h] = env.unwrapped.scene()
        env.close()
    # only the wall changed: the base layout (cube, target, start) of the seed is the same
    cube = {h: next(o for o in s.objects if o.kind == "manipuland").position for h, s in scenes.items()}
    assert cube[0.08] == cube[0.17] == cube[0.22]


def test_the_table_shift_scales_and_zero_is_the_nominal_table():
    offsets = {}
    for scale in (0.0, 1.0, 2.0):
        env = make("push", "shifted-surface", variant_params={"surface.scale": scale}, render_mode=None)
        env.reset(seed=11)
        offsets[scale] = env.unwrapped.table_offset.copy()
        if scale == 0.0:
            nominal = make("push", "nominal", render_mode=None)
            nominal.reset(seed=11)
            np.testing.assert_array_equal(env.unwrapped.observe()["observation.state"], nominal.unwrapped.observe()["observation.state"])
        env.close()
    assert np.all(offsets[0.0] == 0.0)
    np.testing.assert_allclose(offsets[2.0], 2 * offsets[1.0], atol=1e-12)
    d = SurfaceShift()
    assert d.dx_min <= abs(offsets[1.0][0]) <= d.dx_max and d.dz_min <= abs(offsets[1.0][2]) <= d.dz_max


def test_clutter_count_and_goal_jump_follow_their_parameters():
    env = make("push", "clutter", variant_params={"clutter.count": 2, "clutter.ring_min": 0.1, "clutter.ring_max": 0.12}, render_mode=None)
    env.reset(seed=5)
    s = env.unwrapped.scene()
    ds = [o for o in s.objects if o.kind == "distractor"]
    target = next(o for o in s.objects if o.kind == "target")
    assert len(ds) == 2
    for o in ds:
        assert 0.1 - 1e-6 <= np.hypot(o.position[0] - target.position[0], o.position[1] - target.position[1]) <= 0.12 + 1e-6
    env.close()
    env = make("pick-place", "moving-goal", variant_params={"goal.step_min": 30, "goal.step_max": 30}, render_mode=None)
    env.reset(seed=5)
    assert env.unwrapped.layout.goal_jump_step == 30
    env.close()


def test_defaults_are_the_old_constants():
    assert PushEnv.default_variant_params["obstacle"].as_dict() == {
        "obstacle.height": 0.12, "obstacle.radius": 0.025, "obstacle.lateral": 0.075, "obstacle.along": -0.02}
    assert WallObstacle() == PickPlaceEnv.default_variant_params["obstacle"]
    assert (WallObstacle().thickness / 2, WallObstacle().width / 2, WallObstacle().height / 2) == (0.015, 0.05, 0.085)
    assert PushEnv.default_variant_params["moving-goal"] == MovingGoal(step_min=8, step_max=20, jump_min=0.08)
    assert PickPlaceEnv.default_variant_params["moving-goal"] == MovingGoal(step_min=12, step_max=28)
    assert Clutter() == Clutter(count=3, ring_min=0.065, ring_max=0.09, spacing=0.05, knock_distance=0.01)


@pytest.mark.parametrize("task,variant,params,words", [
    ("push", "obstacle", {"obstacle.heigth": 0.1}, ["unknown variant parameter obstacle.heigth", "obstacle.height in [0.02, 0.3] m"]),
    ("push", "obstacle", {"obstacle.height": 0.5}, ["obstacle.height = 0.5", "outside its range [0.02, 0.3] m"]),
    ("pick-place", "obstacle", {"surface.scale": 1.5}, ["surface.scale belongs to variant 'shifted-surface', not 'obstacle'"]),
    ("push", "nominal", {"obstacle.height": 0.1}, ["obstacle.height belongs to variant 'obstacle', not 'nominal'"]),
    ("push", "clutter", {"clutter.count": 2.5}, ["clutter.count must be an integer in [1, 6]"]),
    ("push", "shifted-surface", {"surface.dz_min": 0.05}, ["surface.dz_min (0.05) must be <= surface.dz_max (0.04)"]),
    ("lift", "obstacle", {"obstacle.height": 0.1}, ["unknown variant parameter obstacle.height for lift/obstacle", "no parameters"]),
])
def test_bad_parameters_are_one_clear_error(task, variant, params, words):
    from gymnasium.envs.registration import load_env_creator

    from policy_steer.envs import ENTRY_POINTS

    defaults = load_env_creator(ENTRY_POINTS[task]).default_variant_params
    with pytest.raises(ConfigError) as e:
        resolve_params(task, variant, defaults, params)
    for w in words:
        assert w in str(e.value)


VLS_FIXTURE = Path(__file__).resolve().parents[1] / "fixtures" / "vls_defaults_e54c6b6.json"


def _replay_vls(tmp_path: Path, tasks: str, variants: str, seeds: int) -> None:
    _replay(tmp_path, tasks, variants, seeds, steer="vls", fixture=VLS_FIXTURE)


def test_vls_at_default_settings_replays_the_committed_records_on_the_obstacle_tasks(tmp_path):
    # the reward programs, the new terms and the variant parameters leave VLS's published episodes as they were
    _replay_vls(tmp_path, "push", "obstacle", 1)


@pytest.mark.slow
def test_vls_at_default_settings_replays_every_committed_record(tmp_path):
    _replay_vls(tmp_path, "push,pick-place", "obstacle,shifted-surface", 3)


def test_envs_show_renders_any_parameter_setting_and_envs_list_names_them(tmp_path, capsys):
    from PIL import Image

    shots = {}
    for h in ("0.06", "0.24"):
        out = tmp_path / f"wall{h}.png"
        assert main(["envs", "show", "--task", "pick-place", "--variant", "obstacle", "--seed", "1",
                     "--variant_params", f"obstacle.height={h};obstacle.width=0.2", "--size", "120,160", "--out", str(out)]) == 0
        shots[h] = np.asarray(Image.open(out))
    assert "obstacle.height=0.24" in capsys.readouterr().out
    assert (shots["0.06"] != shots["0.24"]).any(2).mean() > 0.01  # the taller wall covers more of the picture
    assert main(["envs", "show", "--task", "push", "--variant", "obstacle", "--variant_params", "surface.scale=1",
                 "--out", str(tmp_path / "x.png")]) == 2
    assert "surface.scale belongs to variant 'shifted-surface'" in capsys.readouterr().err
    assert main(["envs", "list", "--json", "true"]) == 0
    rows = {r["task"]: r for r in json.loads(capsys.readouterr().out)}
    (height,) = [p for p in rows["pick-place"]["variant_params"]["obstacle"] if p["name"] == "obstacle.height"]
    assert height["default"] == 0.17 and height["range"] == [0.02, 0.26]
    assert [p["default"] for p in rows["push"]["variant_params"]["moving-goal"]][:2] == [8, 20]
