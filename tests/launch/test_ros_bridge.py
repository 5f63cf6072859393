"""launch/ros_bridge_example.py: a plain-Python process (pyzmq + msgpack) next to a policy server.

It runs as its own process against the fixed-chunk server, beside a sim-as-robot process, and must send
its episode context (the scene of ``--scene FILE.json``: the server's policy sees it), get chunks,
publish actions and report them (``executed``), receive the server's telemetry and the robot's, and
import nothing from policy_steer (nor numpy).
"""

from __future__ import annotations

import ast
import json
import sys

from tests.launch.helpers import PYTHON, REPO, Proc, TelemetryCollector, free_endpoint
from tests.transport.helpers import ServerProcess

BRIDGE = REPO / "launch" / "ros_bridge_example.py"
ALLOWED_IMPORTS = {"zmq", "msgpack"} | set(sys.stdlib_module_names)
SCENE = {"task": "push", "variant": "nominal", "instruction": "push the block onto the target", "frame": "world",
         "objects": [{"name": "block", "kind": "manipuland", "shape": "box", "position": [0.42, 0.05, 0.02],
                      "half_size": [0.02, 0.02, 0.02]},
                     {"name": "target", "kind": "target", "shape": "cylinder", "position": [0.5, -0.1, 0.0],
                      "half_size": [0.04, 0.04, 0.001]}]}


def test_the_bridge_imports_only_pyzmq_msgpack_and_the_standard_library():
    tree = ast.parse(BRIDGE.read_text())
    roots = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            roots |= {a.name.split(".")[0] for a in node.names}
        elif isinstance(node, ast.ImportFrom) and node.level == 0:
            roots.add(node.module.split(".")[0])
    assert roots <= ALLOWED_IMPORTS, roots - ALLOWED_IMPORTS
    dynamic = [n for n in ast.walk(tree) if isinstance(n, ast.Name) and n.id in ("__import__", "importlib")]
    assert "importlib" not in roots and not dynamic  # no import by name at run time either


def test_the_bridge_gets_chunks_and_both_telemetry_streams(tmp_path):
    server = ServerProcess(["--bind", "tcp://127.0.0.1:*", "--telemetry", "tcp://127.0.0.1:*", "--state_dim", "19",
                            "--action_dim", "3", "--cameras", "front:8x8", "--echo", "true"])
    robot_tel = free_endpoint()
    scene = tmp_path / "scene.json"
    scene.write_text(json.dumps(SCENE))
    tel = TelemetryCollector({"server": server.telemetry})
    robot = bridge = None
    try:
        robot = Proc.cli("sim-robot", "--task", "push", "--rate", "20", "--server", server.endpoint,
                         "--max_steps", "400", "--telemetry", robot_tel, "--request_timeout_s", "3")
        robot.wait_line("sim-robot: connected", 60)
        out = tmp_path / "bridge.json"
        # run with -c so the test sees every module the script loaded, whatever it prints
        code = (
            "import runpy, sys, json\n"
            f"sys.argv = ['ros_bridge_example.py', '--server', {server.endpoint!r}, '--telemetry', {server.telemetry!r},"
            f" '--robot_telemetry', {robot_tel!r}, '--rate', '20', '--steps', '60', '--json', {str(out)!r},"
            f" '--scene', {str(scene)!r}, '--instruction', 'push the block onto the target']\n"
            "try:\n"
            f"    runpy.run_path({str(BRIDGE)!r}, run_name='__main__')\n"
            "except SystemExit as e:\n"
            "    code = e.code\n"
            "print('MODULES ' + json.dumps(sorted(m for m in sys.modules if m.split('.')[0] in ('policy_steer', 'numpy', 'torch'))))\n"
            "sys.exit(code)\n"
        )
        bridge = Proc([PYTHON, "-c", code])
        assert bridge.wait(90) == 0, bridge.output_tail()
    finally:
        for p in (bridge, robot):
            if p is not None:
                p.kill()
        server.kill()
        tel.stop()
    assert "ros-bridge: welcome" in bridge.output and "ros-bridge: episode started" in bridge.output
    assert "MODULES []" in bridge.output  # neither policy_steer nor numpy was imported
    s = json.loads(out.read_text())
    assert s["steps"] == 60 and s["chunks"] >= 2 and s["published"] >= 30
    assert s["published"] + s["held"] == 60
    assert not set(s["errors"]) - {"busy"}, s["errors"]
    assert s["pongs"] >= 1
    assert s["telemetry"]["server"].get("chunk", 0) >= s["chunks"]  # its own chunks and the robot's
    assert s["telemetry"]["server"].get("metrics", 0) >= 1
    assert s["telemetry"]["robot"].get("action", 0) >= 20
    assert s["modules"] == []
    # the episode context went out and the server's policy saw it in every chunk of the bridge's session
    assert s["episodes"] == 1 and s["executed_sent"] == s["published"]
    mine = [m for m in tel.of("server", "chunk") if m.header["session"] == s["session"]]
    assert mine
    for m in mine:
        ctx = m.header["info"]["echo"]["context"]
        assert ctx["instruction"] == "push the block onto the target"
        assert ctx["objects"] == {o["name"]: o["position"] for o in SCENE["objects"]}
    executed = [m for m in tel.of("server", "executed") if m.header["session"] == s["session"]]
    assert executed and all(m.arrays["action"].shape == (3,) for m in executed)
