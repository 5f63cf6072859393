"""``policy-steer launch``: bring a config up, report it healthy, tear it down (a death, SIGINT, a
stubborn process, a readiness timeout, a killed launcher) and leave no process behind (psutil).

The launcher runs as its own process, as a user would run it; its children are real processes.
"""

from __future__ import annotations

import importlib
import json
import os
import re
import runpy
import signal
import textwrap
import time
from pathlib import Path

import pytest

from policy_steer.config import parse_config
from policy_steer.errors import ConfigError
from policy_steer.launch.config import load_launch, parse_overrides
from policy_steer.launch.process import resolve_command
from tests.launch.helpers import REPO, Proc, alive, descendants, free_endpoint

SHIPPED = sorted((REPO / "launch").glob("*.yaml"))


def write(tmp_path: Path, text: str, name: str = "launch.yaml") -> Path:
    path = tmp_path / name
    path.write_text(textwrap.dedent(text))
    return path


def test_the_four_uses_are_shipped_and_every_command_parses():
    assert {p.name for p in SHIPPED} >= {"sim_benchmark.yaml", "real_robot.yaml", "ros_bridge.yaml", "sim_robot.yaml"}
    from policy_steer.cli.main import COMMANDS

    for path in SHIPPED:
        cfg = load_launch(path)
        for proc in cfg.processes:
            words = proc.command
            if words[0] == "policy-steer":  # the options must be the command's own (catches typos in the file)
                name = next(n for n in (" ".join(words[1:3]), words[1]) if n in COMMANDS)
                module = importlib.import_module(COMMANDS[name][0])
                config_cls = module.COMMANDS[name][0] if hasattr(module, "COMMANDS") else module.Config
                parse_config(config_cls, words[1 + len(name.split()):])
            else:
                assert resolve_command(words)[0] == os.sys.executable and words[1].endswith("ros_bridge_example.py")
                bridge = runpy.run_path(words[1])
                bridge["parse_args"](words[2:])


def test_real_robot_is_a_dry_run_by_default():
    cfg = load_launch(REPO / "launch" / "real_robot.yaml")
    robot = next(p for p in cfg.processes if p.name == "robot")
    i = robot.command.index("--dry_run")
    assert robot.command[i + 1] == "true" and robot.after == ["server"]


@pytest.mark.parametrize(
    "body, message",
    [
        ("processes: []", "no processes"),
        ("processes: {a: 1}", "'processes' must be a list"),
        ("processes:\n  - {name: a}", "'command' must be a string or a list"),
        ("processes:\n  - {name: a, command: x, colour: red}", "colour"),
        ("processes:\n  - {name: a, command: x}\n  - {name: a, command: y}", "used twice"),
        ("processes:\n  - {name: a, command: x, after: [b]}\n  - {name: b, command: y}", "not an earlier process"),
        ("processes:\n  - {name: a, command: x, ready: {kind: http}}", "ready.kind must be one of"),
        ("processes:\n  - {name: a, command: x, ready: {kind: line}}", "needs ready.pattern"),
        ("processes:\n  - {name: a, command: x, ready: {kind: ping}}", "needs ready.endpoint"),
        ("processes:\n  - {name: a, command: x, ready: {timeout_s: soon}}", "timeout_s"),
        ("processes:\n  - {name: a, command: 'run ${nope}'}", "unknown variable ${nope}"),
        ("processes:\n  - {name: 'a b', command: x}", "'name' must be"),
        ("processes:\n  - {name: a, command: 'x \"unclosed'}", "cannot split"),
        ("processes: [\n", "not valid YAML"),
    ],
)
def test_bad_launch_files_say_what_is_wrong(tmp_path, body, message):
    with pytest.raises(ConfigError, match=message.replace("$", r"\$").replace("{", r"\{").replace("}", r"\}")):
        load_launch(write(tmp_path, body))


def test_vars_and_overrides(tmp_path):
    path = write(tmp_path, """
        vars: {port: "1", word: hi}
        processes:
          - {name: a, command: "python -c 'print(1)' ${word} ${port}", env: {X: "${word}"}}
    """)
    cfg = load_launch(path, parse_overrides(["port=2"]))
    assert cfg.processes[0].command == ["python", "-c", "print(1)", "hi", "2"] and cfg.processes[0].env == {"X": "hi"}
    with pytest.raises(ConfigError, match="not under vars"):
        load_launch(path, {"typo": "1"})
    with pytest.raises(ConfigError, match="name=value"):
        parse_overrides(["novalue"])
    # --set arrives split on commas: a piece without '=' continues the value before it (list values)
    assert parse_overrides(["mode=sync", "vlash", "episodes=3"]) == {"mode": "sync,vlash", "episodes": "3"}
    # repeated --set options add up (the option parser alone would keep the last), values are verbatim
    lists = write(tmp_path, """
        vars: {mode: "sync,async", episodes: "1", out: "results"}
        processes:
          - {name: a, command: "python -c pass --mode ${mode} --episodes ${episodes} --out ${out}"}
    """, "lists.yaml")
    check = Proc.cli("launch", str(lists), "--set", "mode=sync,vlash", "--set", "episodes=3", "--set=out=/tmp/a:b",
                     "--check", "true")
    assert check.wait(60) == 0, check.output
    assert "--mode sync,vlash --episodes 3 --out /tmp/a:b" in check.output
    bad = Proc.cli("launch", str(write(tmp_path, "processes: []", "empty.yaml")))
    assert bad.wait(60) == 2 and "no processes" in bad.output


def _services(tmp_path: Path, extra: str = "", stop_timeout_s: float = 10.0) -> Path:
    """A fixed-chunk server (ping check), a bridge feeding it (line check, runs until stopped), a shell
    with a child of its own (a process group), plus ``extra`` processes."""
    server, tel = free_endpoint(), free_endpoint()
    base = textwrap.dedent(f"""
        name: test-services
        stop_timeout_s: {stop_timeout_s}
        vars: {{server: "{server}", telemetry: "{tel}"}}
        env: {{OMP_NUM_THREADS: "1"}}
        processes:
          - name: server
            command: python -m policy_steer.transport.fixed_policy --bind ${{server}} --telemetry ${{telemetry}} --state_dim 4
            ready: {{kind: ping, endpoint: "${{server}}", timeout_s: 60}}
          - name: bridge
            command: python ${{launch_dir}}/bridge.py --server ${{server}} --telemetry ${{telemetry}} --steps 0 --rate 20
            after: [server]
            ready: {{kind: line, pattern: "ros-bridge: welcome", timeout_s: 60}}
          - name: watcher
            command: [sh, -c, "sleep 300 & wait"]
            ready: {{kind: telemetry, endpoint: "${{telemetry}}", timeout_s: 60}}
            after: [server]
    """)
    path = tmp_path / "launch.yaml"
    path.write_text(base + textwrap.indent(textwrap.dedent(extra), "  "))
    return path


@pytest.fixture
def bridge_copy(tmp_path):
    (tmp_path / "bridge.py").write_text((REPO / "launch" / "ros_bridge_example.py").read_text())


def _bring_up(path: Path) -> tuple[Proc, list]:
    launcher = Proc.cli("launch", str(path))
    launcher.wait_line("processes healthy", 120)
    kids = descendants(launcher.pid)
    assert len(kids) >= 4  # server, bridge, sh and its sleep (and whatever else the config adds)
    return launcher, kids


def _assert_gone(kids, timeout_s: float = 10.0) -> None:
    deadline = time.monotonic() + timeout_s
    while alive(kids) and time.monotonic() < deadline:
        time.sleep(0.1)
    left = alive(kids)
    for p in left:  # do not leave them to the next test, but fail
        p.kill()
    assert not left, [(p.pid, p.cmdline()) for p in left]


def test_sigint_stops_everything_cleanly(tmp_path, bridge_copy):
    launcher, kids = _bring_up(_services(tmp_path))
    table = launcher.output
    assert all(name in table for name in ("server", "bridge", "watcher")) and "healthy" in table
    os.kill(launcher.pid, signal.SIGINT)
    assert launcher.wait(60) == 0, launcher.output_tail()
    _assert_gone(kids)
    out = launcher.output
    assert "stopping: SIGINT received" in out and "stopped (SIGINT)" in out and "killed" not in out
    # reverse order: the last started is stopped first, the server last
    assert out.index("stopping watcher") < out.index("stopping bridge") < out.index("stopping server")
    assert re.search(r"^bridge +\| ros-bridge: summary", out, re.M), out  # it ended its own way and said so


def test_a_process_that_dies_takes_the_launch_down_with_a_failure(tmp_path, bridge_copy):
    launcher, kids = _bring_up(_services(tmp_path, """
        - name: dier
          command: [python, -c, "import time; print('up', flush=True); time.sleep(3); raise SystemExit(3)"]
          ready: {kind: line, pattern: "^up$"}
    """))
    assert launcher.wait(60) == 1, launcher.output_tail()
    _assert_gone(kids)
    out = launcher.output
    assert "FAILED dier: exited with 3" in out and "stopping server" in out


def test_a_process_that_ignores_signals_is_killed_and_reported(tmp_path, bridge_copy):
    launcher, kids = _bring_up(_services(tmp_path, """
        - name: stubborn
          command: [python, -c, "import signal, time; [signal.signal(s, signal.SIG_IGN) for s in (signal.SIGINT, signal.SIGTERM)]; print('up', flush=True); time.sleep(300)"]
          ready: {kind: line, pattern: up}
    """, stop_timeout_s=1.0))
    os.kill(launcher.pid, signal.SIGINT)
    assert launcher.wait(60) == 1, launcher.output_tail()
    _assert_gone(kids)
    out = launcher.output
    assert "stubborn still running after 1 s: sending SIGTERM" in out and "sending SIGKILL" in out
    assert "FAILED stubborn: did not stop" in out


def test_a_readiness_timeout_fails_the_launch(tmp_path):
    path = write(tmp_path, """
        processes:
          - name: mute
            command: [python, -c, "import time; time.sleep(300)"]
            ready: {kind: line, pattern: never, timeout_s: 2}
          - name: later
            command: [python, -c, "print('never started')"]
            after: [mute]
    """)
    launcher = Proc.cli("launch", str(path))
    assert launcher.wait(60) == 1
    out = launcher.output
    assert "FAILED mute: not healthy within 2 s" in out and "never started" not in out and "not started" in out


def test_a_killed_launcher_leaves_no_orphans(tmp_path, bridge_copy):
    launcher, kids = _bring_up(_services(tmp_path))
    os.kill(launcher.pid, signal.SIGKILL)  # no teardown: the children's parent-death signal does it
    launcher.wait(10)
    _assert_gone(kids, timeout_s=20)


@pytest.fixture(scope="module")
def push_checkpoint(tmp_path_factory):
    """A tiny random lerobot DiffusionPolicy whose shapes fit ``push`` (what launch/sim_robot.yaml serves)."""
    from policy_steer import envs
    from tests.runtime.conftest import build_env_policy

    u = envs.make("push", "obstacle").unwrapped
    return build_env_policy(tmp_path_factory.mktemp("push_tiny"), u.state_dim, u.state_dim - u.robot_state_dim,
                            u.action_dim, u.max_step)


def test_the_shipped_sim_robot_launch_runs_a_real_policy_and_stops_on_sigint(tmp_path, push_checkpoint):
    """`policy-steer launch launch/sim_robot.yaml` as shipped (only the checkpoint, ports and output moved):
    server and robot come up healthy, an episode runs to its end, and Ctrl-C in the next one stops both
    cleanly (exit 0, the robot's report written with the interrupted episode), leaving no process behind."""
    out = tmp_path / "sim_robot.json"
    overrides = ",".join([
        f"policy={push_checkpoint}", "episodes=50", f"report={out}", f"server={free_endpoint()}",
        f"server_telemetry={free_endpoint()}", f"robot_telemetry={free_endpoint()}",
    ])
    launcher = Proc.cli("launch", str(REPO / "launch" / "sim_robot.yaml"), "--set", overrides)
    try:
        launcher.wait_line("processes healthy", 240)
        kids = descendants(launcher.pid)
        launcher.wait_line("sim-robot: episode 0 seed 0: success=", 120)  # 150 steps at 20 Hz: about 8 s
        os.kill(launcher.pid, signal.SIGINT)
        assert launcher.wait(60) == 0, launcher.output_tail()
    finally:
        launcher.kill()
    _assert_gone(kids)
    log = launcher.output
    assert "stopping: SIGINT received" in log and "killed" not in log and "FAILED" not in log
    assert log.index("stopping robot") < log.index("stopping server")
    assert re.search(r"robot +\| policy-steer sim-robot: done, \d+ episode\(s\)", log), launcher.output_tail()
    assert re.search(r"│ server +│ \d+ +│ stopped \(SIGINT\) .*│ 0 +│", log) and re.search(
        r"│ robot +│ \d+ +│ stopped \(SIGINT\) .*│ 0 +│", log), launcher.output_tail()
    report = json.loads(out.read_text())
    first, *rest = report["episodes"]
    assert 0 < first["steps"] <= 150 and first["n_chunks"] >= 1 and not first["interrupted"]
    # Ctrl-C landed in episode 1 (or, on a very slow machine, just before it started)
    assert len(report["episodes"]) < 50 and (not rest or rest[-1]["interrupted"])
