"""The episode context a real robot sends: ``--instruction``, ``--scene FILE.json`` and a Python
perception hook (``ContextProvider``), against a live policy server in its own OS process.

The server is the fixed-chunk server with ``--echo true``: every chunk's ``info.echo.context`` says
which context the served policy held when it computed the chunk (the one its steering strategies see),
and the server publishes every chunk on its telemetry.
"""

from __future__ import annotations

import dataclasses
import json

import pytest

from policy_steer.errors import ConfigError
from policy_steer.hardware.context import ContextProvider, load_scene_file
from policy_steer.hardware.host import RobotConfig, RobotHost
from policy_steer.scene import Scene
from tests.hardware.helpers import run_cli
from tests.launch.helpers import TelemetryCollector
from tests.transport.helpers import ServerProcess

SCENE = {"task": "push", "variant": "nominal", "instruction": "push the block onto the target", "frame": "world",
         "objects": [{"name": "block", "kind": "manipuland", "shape": "box", "position": [0.42, 0.05, 0.02],
                      "half_size": [0.02, 0.02, 0.02]},
                     {"name": "target", "kind": "target", "shape": "cylinder", "position": [0.5, -0.1, 0.0],
                      "half_size": [0.04, 0.04, 0.001]}]}
# the virtual arm's end-effector policy: state ee_pos, gripper, 5 joints; [dx, dy, dz, g] actions
ECHO_SERVER = ["--bind", "tcp://127.0.0.1:*", "--telemetry", "tcp://127.0.0.1:*", "--state_dim", "9",
               "--action_dim", "4", "--horizon", "16", "--echo", "true"]


def one_error_line(stderr: str) -> str:
    lines = [ln for ln in stderr.splitlines() if ln.startswith("policy-steer: error:")]
    assert len(lines) == 1 and "Traceback" not in stderr, stderr
    return lines[0]


@pytest.fixture(scope="module")
def echo_server():
    server = ServerProcess(ECHO_SERVER)
    yield server
    server.kill()


def test_a_scene_file_holds_a_scene_or_a_whole_context(tmp_path):
    scene = tmp_path / "scene.json"
    scene.write_text(json.dumps(SCENE))
    ctx = load_scene_file(scene)
    assert ctx.scene == Scene.from_dict(SCENE) and ctx.instruction is None
    whole = tmp_path / "context.json"
    whole.write_text(json.dumps({"instruction": "push it", "task": "push", "scene": SCENE}))
    ctx = load_scene_file(whole)
    assert ctx.instruction == "push it" and ctx.task == "push" and ctx.scene.object("block").position == [0.42, 0.05, 0.02]


@pytest.mark.parametrize("content, where", [
    ({**SCENE, "objects": [{**SCENE["objects"][0], "position": [0.4, 0.0]}]}, "objects/0/position"),
    ({**SCENE, "objects": [{**SCENE["objects"][0], "kind": "cat"}]}, "objects/0/kind"),
    ({"instruction": "x", "scene": {"objects": []}}, "scene"),
    ({"instruction": "x", "colour": "red"}, "colour"),
    ("not json {", "not valid JSON"),
])
def test_a_scene_that_fails_its_schema_is_one_clear_error(tmp_path, content, where):
    bad = tmp_path / "bad.json"
    bad.write_text(content if isinstance(content, str) else json.dumps(content))
    with pytest.raises(ConfigError, match=f"--scene {bad}: .*{where}"):
        load_scene_file(bad)


def test_the_robot_command_refuses_a_bad_scene_before_connecting(tmp_path):
    bad = tmp_path / "bad.json"
    bad.write_text(json.dumps({**SCENE, "objects": [{**SCENE["objects"][0], "position": [0.4, 0.0]}]}))
    # no server at this endpoint: the file is read (and refused) before anything connects
    r = run_cli(["robot", "--driver", "virtual", "--server", "tcp://127.0.0.1:1", "--connect_timeout_s", "1",
                 "--estop", "", "--scene", str(bad)], timeout_s=60)
    assert r.returncode == 2
    line = one_error_line(r.stderr)
    assert f"--scene {bad}" in line and "objects/0/position" in line and "too short" in line
    r = run_cli(["robot", "--driver", "virtual", "--server", "tcp://127.0.0.1:1", "--estop", "",
                 "--scene", str(tmp_path / "missing.json")], timeout_s=60)
    assert r.returncode == 2 and "no such file" in one_error_line(r.stderr)


def test_a_robot_run_sends_its_scene_and_the_servers_policy_sees_it(echo_server, tmp_path):
    scene = tmp_path / "scene.json"
    scene.write_text(json.dumps(SCENE))
    report = tmp_path / "run.json"
    tel = TelemetryCollector({"server": echo_server.telemetry})
    try:
        tel.wait_for("server", lambda ms: any(m.topic == "metrics" for m in ms), 30)
        r = run_cli(["robot", "--driver", "virtual", "--server", echo_server.endpoint, "--estop", "", "--max_steps", "25",
                     "--scene", str(scene), "--instruction", "push the block onto the target", "--report", str(report)])
        assert r.returncode == 0, r.stderr
        session = json.loads(report.read_text())["session"]
        tel.wait_for("server", lambda ms: any(m.topic == "chunk" and m.header["session"] == session for m in ms), 10)
    finally:
        tel.stop()
    chunks = [m for m in tel.of("server", "chunk") if m.header["session"] == session]
    started = [m for m in tel.of("server", "event") if m.header.get("session") == session
               and m.header.get("event") == "episode_started"]
    assert chunks and started and started[0].header["implicit"] is False  # an `episode` with the context, not implicit
    for m in chunks:
        ctx = m.header["info"]["echo"]["context"]
        assert ctx["objects"] == {o["name"]: o["position"] for o in SCENE["objects"]}
        assert ctx["instruction"] == "push the block onto the target"
        assert ctx["robot"] == "delta"  # the arm's robot description: ee_delta actions on the virtual arm


class MovingBlock:
    """A perception hook: the block moves 1 cm along x every time it is asked."""

    dynamic_scene = True

    def __init__(self) -> None:
        self.calls: list[tuple[bool, int | None]] = []  # (got the host's base scene, seed)

    def context(self, base, seed):
        self.calls.append((base.scene is not None, seed))
        scene = base.scene if base.scene is not None else Scene.from_dict(SCENE)
        block = scene.object("block")
        moved = dataclasses.replace(block, position=[block.position[0] + 0.01, *block.position[1:]])
        others = [o for o in scene.objects if o.name != "block"]
        return base.with_scene(dataclasses.replace(scene, objects=[moved, *others]))


def test_a_context_provider_is_asked_at_the_episode_start_and_before_every_request(echo_server):
    provider = MovingBlock()
    assert isinstance(provider, ContextProvider)
    cfg = RobotConfig(driver="virtual", server=echo_server.endpoint, estop="", max_steps=30, mode="sync",
                      instruction="push the block onto the target")
    tel = TelemetryCollector({"server": echo_server.telemetry})
    try:
        tel.wait_for("server", lambda ms: any(m.topic == "metrics" for m in ms), 30)
        with RobotHost(cfg, context_provider=provider) as host:
            result = host.run()
            session = host.welcome.session
        (res,) = result.results
        n_chunks = sum(c.chunk_id is not None for c in res.chunks)
        tel.wait_for("server", lambda ms: sum(m.topic == "chunk" and m.header["session"] == session for m in ms)
                     >= n_chunks, 10)
    finally:
        tel.stop()
    assert host.safety.dynamic_scene and n_chunks >= 2
    assert len(provider.calls) == 1 + len(res.chunks)  # the episode start, then before every request
    assert provider.calls[0][0] is False and all(got for got, _ in provider.calls[1:])  # updates build on the last
    # each chunk was computed with the block where the provider had put it just before that request
    xs = [m.header["info"]["echo"]["context"]["objects"]["block"][0]
          for m in tel.of("server", "chunk") if m.header["session"] == session]
    assert xs == pytest.approx([0.43 + 0.01 * (k + 1) for k in range(len(xs))])
