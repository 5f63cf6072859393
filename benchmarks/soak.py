"""Soak: many sim-robots on one policy server, the server killed and restarted, a robot killed.

    .venv/bin/python benchmarks/soak.py [--robots 8] [--minutes 10] [--server_restarts 5] [--kill_robots 1]
        [--task push] [--variant nominal] [--policy checkpoints/push-diffusion | fixed] [--out results/soak]

Real OS processes over loopback ZeroMQ on the wall clock: one ``policy-steer serve`` (``--policy fixed``:
the fixed-chunk test server ``python -m policy_steer.transport.fixed_policy``, no torch, for a cheap run)
and ``--robots`` ``policy-steer sim-robot`` processes, each with ``--episodes`` enough to outlast the run,
``--records true`` (every step's executed action, the chunk and row it came from and the safety layer's
decision, and every chunk request, in its ``--report``) and its own ``--telemetry`` PUB on a loopback
port, to which this script subscribes from before the robot starts.

The timeline (``T`` = ``--minutes``, counted from the moment every robot has started its first episode):

- the server is SIGKILLed at ``T * k / (R + 1)`` (k = 1..R, ``--server_restarts`` R), stays down
  ``--down_s`` seconds and is started again on the same endpoint; the robots hold while it is gone and
  reconnect on their own (the client sends ``hello`` again, then its configure settings and the episode
  context);
- ``--kill_robots`` robots are SIGKILLed half-way between two outages (the last robots: robot N-1, N-2, ...);
  they never write a report: their episodes are accounted for from their telemetry (``episode_start``,
  ``episode_end``, every ``action``);
- at ``T`` the others get SIGTERM (the host safe-stops, ends the episode in progress as ``interrupted``,
  writes its report, exits 0), then the server gets SIGTERM (its exit code and time to exit are printed).

**The watchdog** (decided here): the robots run with ``--watchdog.stop_after_s`` ``--stop_after_s``
(default 120 s, above an outage plus a checkpoint's load time on a loaded machine) so that an outage
ends in a hold and a resume, not a safe stop, and ``--watchdog.loop_stall_s`` ``--loop_stall_s``
(default 5 s: N robots and the server share this machine's cores; a stall of the robot's own loop is not
what this soak tests). A safe stop that happens anyway is accounted for (the episode's outcome is
``safe_stopped``; the robot exits 3 with its report) and fails the check "no safe stop".

**Checks** (each printed PASS/FAIL, all in ``soak.json``; exit 1 when one fails):

1. *every episode accounted for*: per robot, the episodes seen starting on its telemetry and the episodes
   in its report are the same contiguous indices 0..n-1; each has exactly one outcome: ``finished``
   (the report, or ``episode_end`` on the telemetry of a killed robot), ``interrupted`` (the last one of a
   robot stopped by SIGTERM), ``killed`` (the one a killed robot was running: started on its telemetry,
   never ended) or ``safe_stopped``; a surviving robot exits 0 with a report that has a record per
   episode with a step per control step; a killed robot has no report;
2. *no unvalidated action*: every step in the records is ``exec``, ``hold`` or ``stopped``; an ``exec``
   step executes a row the safety layer found among the rows of validated chunks (``validated_chunk``),
   and that row traces to a chunk request that was answered, passed the chunk guard and was queued
   (``chunk_id``, not dropped, no error), arrived before the step ran, and the row is the one planned for
   that step (``step == first_step + index - first_index``); with ``--policy fixed`` the row's values are
   also checked against the known chunk (``actions[i, j] = i + j / 100``, clamped by the guard into the
   task's step bounds); a ``hold`` step commands no motion (a zero step, delta actions); a ``stopped``
   step sends nothing. The killed robots' steps (no report) are checked from their telemetry ``action``
   messages (``exec`` carries a chunk id and row);
3. *reconnects*: after every restart, every robot alive then got a chunk from the new server;
4. *no safe stop*, every robot (but the killed) exited 0, the server's last SIGTERM exit 0.

**Figures**: episodes per robot (started / finished / interrupted / killed / safe-stopped, successes),
steps executed and held, holds (count, total and longest, how many overlap an outage), reconnect times
per robot and outage (server killed -> first chunk from the restarted server; restarted server ready ->
that chunk; -> the first executed step after it), the server's restart times. Written to ``--out``:
``soak.json``, ``soak.md``, ``soak_timeline.png`` (holds per robot, outages shaded), the robots'
reports (``robots/``), their telemetry events (``telemetry/``) and every process's log (``logs/``).
A folder that already has results is refused unless ``--overwrite``.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
from collections import defaultdict
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

BIN = REPO / ".venv" / "bin" / "policy-steer"
PYTHON = REPO / ".venv" / "bin" / "python"
FIXED = "fixed"
RESULT_FILES = ("soak.json", "soak.md", "soak_timeline.png")


# ------------------------------------------------------------------------------------------ options
def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    p.add_argument("--robots", type=int, default=8, help="sim-robot processes")
    p.add_argument("--minutes", type=float, default=10.0, help="soak length, from every robot's first episode")
    p.add_argument("--server_restarts", type=int, default=5, help="times the server is SIGKILLed and restarted")
    p.add_argument("--kill_robots", type=int, default=1, help="robots SIGKILLed mid-run")
    p.add_argument("--task", default="push", help="sim-robot --task")
    p.add_argument("--variant", default="nominal", help="sim-robot --variant")
    p.add_argument("--policy", default=None,
                   help="checkpoint folder served by `policy-steer serve` (default checkpoints/<task>-diffusion), "
                        "or 'fixed' for the fixed-chunk test server (python -m policy_steer.transport.fixed_policy)")
    p.add_argument("--steer", default="none", help="serve --steer (a checkpoint policy only)")
    p.add_argument("--mode", default="vlash", help="sim-robot --mode: sync | async | vlash")
    p.add_argument("--out", default="results/soak", help="folder for soak.json, soak.md, soak_timeline.png, reports, logs")
    p.add_argument("--overwrite", action="store_true", help="replace the results already in --out")
    p.add_argument("--down_s", type=float, default=3.0, help="seconds the server stays dead before its restart")
    p.add_argument("--stop_after_s", type=float, default=120.0, help="robots' --watchdog.stop_after_s")
    p.add_argument("--loop_stall_s", type=float, default=5.0, help="robots' --watchdog.loop_stall_s")
    p.add_argument("--request_timeout_s", type=float, default=2.0, help="robots' --request_timeout_s")
    p.add_argument("--connect_timeout_s", type=float, default=300.0,
                   help="robots' --connect_timeout_s (an episode start waits this long for a restarting server)")
    p.add_argument("--server_ready_timeout_s", type=float, default=300.0, help="give up on a server start after this")
    p.add_argument("--startup_timeout_s", type=float, default=300.0,
                   help="wait this long for every robot's first episode before the clock starts")
    p.add_argument("--seed", type=int, default=0, help="robot i runs episode seeds seed + 100000 * i + 0, 1, ...")
    args = p.parse_args(argv)
    if args.robots < 1:
        p.error("--robots must be >= 1")
    if not 0 <= args.kill_robots < args.robots:
        p.error("--kill_robots must be in [0, robots - 1]: at least one robot runs to the end")
    if args.server_restarts < 0 or not args.minutes > 0 or not args.down_s >= 0:
        p.error("--server_restarts >= 0, --minutes > 0, --down_s >= 0")
    if args.policy is None:
        args.policy = f"checkpoints/{args.task}-diffusion"
    return args


# ------------------------------------------------------------------------------------------ processes
def _env() -> dict[str, str]:
    env = dict(os.environ)
    env.update(OMP_NUM_THREADS="1", HF_HUB_OFFLINE="1", PYTHONUNBUFFERED="1", MUJOCO_GL=env.get("MUJOCO_GL", "egl"),
               PYOPENGL_PLATFORM=env.get("PYOPENGL_PLATFORM", "egl"))
    return env


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@dataclass
class TaskInfo:
    state_dim: int
    action_dim: int
    control_hz: float
    max_step: float
    max_episode_steps: int


def task_info(task: str, variant: str) -> TaskInfo:
    from policy_steer import envs

    env = envs.make(task, variant, render_mode=None)
    try:
        u = env.unwrapped
        return TaskInfo(int(env.observation_space["observation.state"].shape[0]), int(env.action_space.shape[0]),
                        float(u.control_hz), float(u.max_step), int(u.max_episode_steps))
    finally:
        env.close()


class Server:
    """The policy server process: started (and restarted) on one endpoint; ``ready`` from its ready line."""

    def __init__(self, args: argparse.Namespace, endpoint: str, info: TaskInfo, logs: Path) -> None:
        self.args, self.endpoint, self.info, self.logs = args, endpoint, info, logs
        self.proc: subprocess.Popen | None = None
        self.starts = 0
        self._ready = threading.Event()

    def command(self) -> list[str]:
        a = self.args
        if a.policy == FIXED:
            i = self.info
            return [str(PYTHON), "-m", "policy_steer.transport.fixed_policy", "--bind", self.endpoint,
                    "--state_dim", str(i.state_dim), "--action_dim", str(i.action_dim), "--horizon", "16",
                    "--control_hz", f"{i.control_hz:g}"]
        return [str(BIN), "serve", "--policy", a.policy, "--bind", self.endpoint, "--steer", a.steer]

    def start(self) -> float:
        """Spawn; returns the monotonic stamp of the spawn."""
        self._ready.clear()
        log = open(self.logs / f"server-{self.starts}.log", "w")  # noqa: SIM115 - the reader thread closes it
        t = time.monotonic()
        self.proc = subprocess.Popen(self.command(), cwd=REPO, env=_env(), stdout=subprocess.PIPE,
                                     stderr=subprocess.STDOUT, text=True, errors="replace", stdin=subprocess.DEVNULL)
        self.starts += 1
        proc = self.proc

        def read() -> None:
            with log:
                for line in proc.stdout:
                    log.write(line)
                    log.flush()
                    if "ready" in line and self.endpoint in line:
                        self._ready.set()

        threading.Thread(target=read, daemon=True).start()
        return t

    def wait_ready(self, timeout_s: float) -> float:
        """The stamp at which the ready line was read; raises when the server exited or timed out."""
        deadline = time.monotonic() + timeout_s
        while not self._ready.wait(0.05):
            if self.proc.poll() is not None:
                raise RuntimeError(f"the server exited with {self.proc.returncode} before it was ready "
                                   f"(see {self.logs}/server-{self.starts - 1}.log)")
            if time.monotonic() > deadline:
                raise RuntimeError(f"the server was not ready within {timeout_s:g} s")
        return time.monotonic()

    def kill(self) -> tuple[float, int | None]:
        t = time.monotonic()
        self.proc.kill()
        return t, self.proc.wait(30)

    def terminate(self, timeout_s: float = 30.0) -> tuple[int | None, float]:
        t = time.monotonic()
        self.proc.send_signal(signal.SIGTERM)
        try:
            rc = self.proc.wait(timeout_s)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait(10)
            rc = None
        return rc, time.monotonic() - t


@dataclass
class Robot:
    index: int
    name: str
    telemetry: str
    report: Path
    log: Path
    to_be_killed: bool
    proc: subprocess.Popen | None = None
    killed_at: float | None = None
    terminated_at: float | None = None
    exit_code: int | None = None
    exit_s: float | None = None  # SIGTERM -> exit


def robot_command(args: argparse.Namespace, r: Robot, endpoint: str, info: TaskInfo, minutes: float) -> list[str]:
    # episodes enough to outlast the run even if every episode were a tenth of its time limit
    episode_s = info.max_episode_steps / info.control_hz
    episodes = int(10 * (minutes * 60 + args.startup_timeout_s) / episode_s) + 100
    return [
        str(BIN), "sim-robot", "--task", args.task, "--variant", args.variant, "--server", endpoint,
        "--mode", args.mode, "--clock", "wall", "--episodes", str(episodes), "--seed", str(args.seed + 100_000 * r.index),
        "--report", str(r.report), "--records", "true", "--telemetry", r.telemetry, "--client_name", r.name,
        "--request_timeout_s", f"{args.request_timeout_s:g}", "--connect_timeout_s", f"{args.connect_timeout_s:g}",
        "--watchdog.stop_after_s", f"{args.stop_after_s:g}", "--watchdog.loop_stall_s", f"{args.loop_stall_s:g}",
    ]


# ------------------------------------------------------------------------------------------ telemetry
class Telemetry:
    """SUB sockets on every robot's telemetry (connected before the robots bind), read on one thread.

    Kept: every ``event`` header; of every ``action``, (episode, step, held, decision, chunk_id, index, stamp).
    """

    def __init__(self, endpoints: dict[int, str]) -> None:
        import zmq

        from policy_steer.transport.telemetry import TelemetrySubscriber

        self.context = zmq.Context()
        self.subs = {i: TelemetrySubscriber(ep, topics=("",), context=self.context, hwm=1_000_000, reconnect_ms=10)
                     for i, ep in endpoints.items()}
        self.events: dict[int, list[dict[str, Any]]] = {i: [] for i in endpoints}
        self.actions: dict[int, list[tuple]] = {i: [] for i in endpoints}
        self.errors = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="soak-telemetry", daemon=True)
        self._thread.start()

    def _run(self) -> None:
        import zmq

        poller = zmq.Poller()
        by_socket = {}
        for i, sub in self.subs.items():
            poller.register(sub.socket, zmq.POLLIN)
            by_socket[sub.socket] = i
        while not self._stop.is_set():
            for sock, _ in poller.poll(100):
                i = by_socket[sock]
                try:
                    msg = self.subs[i].recv(0)
                except Exception:  # noqa: BLE001 - a bad message is counted, the soak goes on
                    self.errors += 1
                    continue
                if msg is None:
                    continue
                h = msg.header
                if msg.topic == "event":
                    self.events[i].append(dict(h))
                elif msg.topic == "action":
                    self.actions[i].append((h.get("episode"), h.get("step"), bool(h.get("held")), h.get("decision"),
                                            h.get("chunk_id"), h.get("index"), h.get("stamp")))

    def of(self, i: int, name: str) -> list[dict[str, Any]]:
        return [e for e in list(self.events[i]) if e.get("event") == name]

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(5)
        for sub in self.subs.values():
            sub.close()
        self.context.term()


# ------------------------------------------------------------------------------------------ the run
@dataclass
class Outage:
    k: int
    planned_s: float  # since t0
    t_kill: float  # monotonic
    t_spawn: float
    t_ready: float
    killed_exit: int | None

    @property
    def down_s(self) -> float:
        return self.t_ready - self.t_kill

    @property
    def startup_s(self) -> float:
        return self.t_ready - self.t_spawn


@dataclass
class Run:
    args: dict[str, Any]
    info: dict[str, Any]
    endpoint: str
    t_start: float  # robots spawned
    t0: float  # every robot started its first episode: the soak clock starts
    t_end: float  # SIGTERM to the robots
    outages: list[Outage] = field(default_factory=list)
    server_first_ready_s: float = 0.0
    server_exit: int | None = None
    server_exit_s: float | None = None
    robots: list[dict[str, Any]] = field(default_factory=list)
    error: str | None = None  # the run could not go on as planned (a server that did not restart, ...)


def schedule(minutes: float, restarts: int, kills: int) -> tuple[list[float], list[float]]:
    """Seconds since t0 of each server kill and each robot kill (half-way between outages)."""
    total = minutes * 60.0
    gap = total / (restarts + 1)
    outages = [gap * (k + 1) for k in range(restarts)]
    robot_kills = [min(total * (j + 1) / (kills + 1) + gap / 2, 0.9 * total) for j in range(kills)]
    return outages, robot_kills


def run_soak(args: argparse.Namespace, out: Path) -> tuple[Run, Telemetry]:
    from tqdm import tqdm

    info = task_info(args.task, args.variant)
    logs, reports = out / "logs", out / "robots"
    for d in (logs, reports, out / "telemetry"):
        d.mkdir(parents=True, exist_ok=True)
    endpoint = f"tcp://127.0.0.1:{free_port()}"
    server = Server(args, endpoint, info, logs)
    t = server.start()
    first_ready = server.wait_ready(args.server_ready_timeout_s) - t
    print(f"soak: server ready on {endpoint} after {first_ready:.1f} s ({'fixed chunk' if args.policy == FIXED else args.policy})",
          flush=True)

    n = args.robots
    killed = set(range(n - args.kill_robots, n))
    robots = [Robot(i, f"soak-robot-{i}", f"tcp://127.0.0.1:{free_port()}", reports / f"robot-{i}.json",
                    logs / f"robot-{i}.log", i in killed) for i in range(n)]
    tel = Telemetry({r.index: r.telemetry for r in robots})
    time.sleep(0.2)
    t_start = time.monotonic()
    for r in robots:
        with open(r.log, "w") as f:
            r.proc = subprocess.Popen(robot_command(args, r, endpoint, info, args.minutes), cwd=REPO, env=_env(),
                                      stdout=f, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL)
    run = Run(vars(args).copy(), asdict(info), endpoint, t_start, t_start, t_start, server_first_ready_s=first_ready)
    try:
        # the clock starts when every robot runs its first episode
        deadline = time.monotonic() + args.startup_timeout_s
        # (any message of its telemetry: the first episode_start may be published before the subscription
        # has reached the robot's fresh PUB socket)
        while not all(tel.events[r.index] or tel.actions[r.index] for r in robots):
            dead = [r for r in robots if r.proc.poll() is not None]
            if dead:
                raise RuntimeError(f"robot {dead[0].index} exited with {dead[0].proc.returncode} before its first "
                                   f"episode (see {dead[0].log})")
            if time.monotonic() > deadline:
                raise RuntimeError(f"not every robot started an episode within {args.startup_timeout_s:g} s")
            time.sleep(0.1)
        t0 = run.t0 = time.monotonic()
        print(f"soak: {n} robots running after {t0 - t_start:.1f} s; soaking {args.minutes:g} min "
              f"({args.server_restarts} server restarts, {args.kill_robots} robot(s) killed)", flush=True)
        kill_at, robot_kill_at = schedule(args.minutes, args.server_restarts, args.kill_robots)
        plan = sorted([(s, "server", k) for k, s in enumerate(kill_at)]
                      + [(s, "robot", sorted(killed)[::-1][j]) for j, s in enumerate(robot_kill_at)])
        total = args.minutes * 60.0
        tty = sys.stderr.isatty()
        bar = tqdm(total=int(total), unit="s", desc="soak", dynamic_ncols=tty, mininterval=1.0 if tty else 30.0)
        done_s = 0

        def tick() -> None:
            nonlocal done_s
            now = min(int(time.monotonic() - t0), int(total))
            if now > done_s:
                ends = sum(len(tel.of(r.index, "episode_end")) for r in robots)
                alive = sum(r.proc.poll() is None for r in robots)
                bar.set_postfix(episodes=ends, robots=alive, outages=len(run.outages), refresh=False)
                bar.update(now - done_s)
                done_s = now

        while True:
            now = time.monotonic() - t0
            if plan and now >= plan[0][0]:
                at, what, k = plan.pop(0)
                if what == "server":
                    t_kill, rc = server.kill()
                    bar.write(f"soak: t={t_kill - t0:6.1f} s  server SIGKILLed (outage {k + 1}/{args.server_restarts})")
                    while time.monotonic() < t_kill + args.down_s:
                        tick()
                        time.sleep(0.05)
                    t_spawn = server.start()
                    t_ready = server.wait_ready(args.server_ready_timeout_s)
                    run.outages.append(Outage(k, at, t_kill, t_spawn, t_ready, rc))
                    bar.write(f"soak: t={t_ready - t0:6.1f} s  server ready again ({t_ready - t_kill:.1f} s after the "
                              f"kill, {t_ready - t_spawn:.1f} s to start)")
                else:
                    r = robots[k]
                    if r.proc.poll() is None:
                        r.killed_at = time.monotonic()
                        r.proc.kill()
                        r.exit_code = r.proc.wait(30)
                        bar.write(f"soak: t={r.killed_at - t0:6.1f} s  robot {k} SIGKILLed")
                continue
            if now >= total:
                break
            tick()
            time.sleep(0.1)
        tick()
        bar.close()
    except Exception as e:  # noqa: BLE001 - stop everything, then report what happened up to here
        run.error = f"{type(e).__name__}: {e}"
        print(f"soak: the run could not go on: {run.error}", file=sys.stderr, flush=True)
    finally:
        # the end: SIGTERM to the robots (they write their reports), then the server
        run.t_end = time.monotonic()
        for r in robots:
            if r.proc is not None and r.proc.poll() is None:
                r.terminated_at = time.monotonic()
                r.proc.send_signal(signal.SIGTERM)
        for r in robots:
            if r.proc is None:
                continue
            try:
                code = r.proc.wait(120)
            except subprocess.TimeoutExpired:
                r.proc.kill()
                code = r.proc.wait(10)
                r.terminated_at = None  # it did not stop on SIGTERM: counted as a failure
            if r.killed_at is None:
                r.exit_code = code
                if r.terminated_at is not None:  # an upper bound: the robots are waited for one after another
                    r.exit_s = time.monotonic() - r.terminated_at
        time.sleep(1.5)  # the robots' telemetry lingers up to 1 s on close
        tel.stop()
        if server.proc is not None and server.proc.poll() is None:
            run.server_exit, run.server_exit_s = server.terminate()
        else:
            run.server_exit = server.proc.returncode if server.proc is not None else None
    run.robots = [{"index": r.index, "name": r.name, "telemetry": r.telemetry, "report": str(r.report),
                   "log": str(r.log), "killed": r.to_be_killed, "killed_at": r.killed_at,
                   "terminated_at": r.terminated_at, "exit_code": r.exit_code, "sigterm_exit_s": r.exit_s} for r in robots]
    return run, tel


# ------------------------------------------------------------------------------------------ analysis
def _runs(flags: list[bool]) -> list[tuple[int, int]]:
    """[start, end) index ranges of consecutive True values."""
    out, start = [], None
    for i, f in enumerate(flags):
        if f and start is None:
            start = i
        elif not f and start is not None:
            out.append((start, i))
            start = None
    if start is not None:
        out.append((start, len(flags)))
    return out


def check_steps(steps: list[dict[str, Any]], chunks: list[dict[str, Any]], fixed_rows: np.ndarray | None,
                delta: bool) -> dict[str, Any]:
    """The per-step "no unvalidated action" check of one episode's records (module docstring, check 2)."""
    by_id = {c["chunk_id"]: c for c in chunks if c.get("chunk_id") is not None}
    bad: list[str] = []
    n = {"exec": 0, "hold": 0, "stopped": 0, "exec_untraced_zero_row": 0}

    def fail(s: dict[str, Any], why: str) -> None:
        if len(bad) < 20:
            bad.append(f"step {s['step']}: {why}")
        n.setdefault("violations", 0)
        n["violations"] += 1

    for s in steps:
        d = s.get("decision")
        if d == "exec":
            n["exec"] += 1
            if s.get("validated_chunk") is None:
                fail(s, "executed, but the safety layer did not find the row among validated chunks")
                continue
            cid, i = s.get("chunk_id"), s.get("index")
            if cid is None:
                # the loop's own hold action (a zero step) equal to a validated row: still a validated row
                n["exec_untraced_zero_row"] += 1
                continue
            c = by_id.get(cid)
            if c is None:
                fail(s, f"executed row {i} of chunk {cid}, which no chunk request produced")
                continue
            if c.get("dropped") is not None or c.get("error") is not None:
                fail(s, f"executed row of chunk {cid}, which was dropped ({c.get('dropped')}) or failed ({c.get('error')})")
            if c.get("completed") is None or c["completed"] > s["started"] + 1e-6:
                fail(s, f"executed at {s['started']:.3f} a row of chunk {cid} that completed at {c.get('completed')}")
            if c.get("first_step") is None or s["step"] != c["first_step"] + (i - c["first_index"]) or i < c["first_index"]:
                fail(s, f"row {i} of chunk {cid} (first step {c.get('first_step')}, first row {c.get('first_index')}) "
                        "ran at another step than planned")
            if fixed_rows is not None:
                if not 0 <= i < len(fixed_rows) or not np.array_equal(np.float32(s["action"]), fixed_rows[i]):
                    fail(s, f"action {s['action']} is not row {i} of the validated fixed chunk")
        elif d == "hold":
            n["hold"] += 1
            cmd = s.get("command")
            if delta and (cmd is None or np.any(np.asarray(cmd, dtype=np.float64) != 0.0)):
                fail(s, f"a hold that commanded motion: {cmd}")
        elif d == "stopped":
            n["stopped"] += 1
            if s.get("command") is not None:
                fail(s, f"a stopped step that sent a command: {s.get('command')}")
        else:
            fail(s, f"unknown decision {d!r}")
    n.setdefault("violations", 0)
    return {**n, "examples": bad}


def _holds_from_steps(steps: list[dict[str, Any]], period: float) -> list[dict[str, Any]]:
    held = [s.get("decision") != "exec" for s in steps]
    out = []
    for a, b in _runs(held):
        t_a = steps[a]["started"]
        t_b = steps[b]["started"] if b < len(steps) else steps[b - 1]["started"] + period
        out.append({"step": steps[a]["step"], "steps": b - a, "t0": t_a, "t1": t_b,
                    "reason": steps[a].get("safety_reason"), "episode_start": steps[a]["step"] == 0})
    return out


def _holds_from_actions(actions: list[tuple], period: float) -> list[dict[str, Any]]:
    out = []
    by_ep: dict[Any, list[tuple]] = defaultdict(list)
    for a in actions:
        by_ep[a[0]].append(a)
    for ep in sorted(by_ep, key=lambda e: (e is None, e)):
        acts = by_ep[ep]
        held = [a[3] != "exec" for a in acts]
        for a, b in _runs(held):
            t_b = acts[b][6] if b < len(acts) else acts[b - 1][6] + period
            out.append({"step": acts[a][1], "steps": b - a, "t0": acts[a][6], "t1": t_b, "reason": None,
                        "episode_start": acts[a][1] == 0})
    return out


def _q(values: list[float], q: float) -> float | None:
    return float(np.quantile(values, q)) if values else None


def analyze(run: Run, tel: Telemetry, args: argparse.Namespace) -> dict[str, Any]:
    info = TaskInfo(**run.info)
    period = 1.0 / info.control_hz
    fixed_rows = None
    if args.policy == FIXED:
        h, a = 16, info.action_dim
        fixed = np.arange(h, dtype=np.float32)[:, None] + np.arange(a, dtype=np.float32)[None, :] / 100
        fixed_rows = np.clip(fixed, np.float32(-info.max_step), np.float32(info.max_step)).astype(np.float32)
    delta = True  # sim-robot's default --action_mode
    windows = [(o.t_kill, o.t_ready) for o in run.outages]
    checks: dict[str, dict[str, Any]] = {}
    problems: dict[str, list[str]] = defaultdict(list)
    robots_out = []

    for rmeta in run.robots:
        i = rmeta["index"]
        starts = tel.of(i, "episode_start")
        ends = tel.of(i, "episode_end")
        started_tel = sorted({int(e["episode"]) for e in starts})
        ended_tel = {int(e["episode"]): e for e in ends}
        actions = tel.actions[i]
        report_path = Path(rmeta["report"])
        report = None
        if report_path.exists():
            try:
                report = json.loads(report_path.read_text())
            except ValueError as e:
                problems["accounting"].append(f"robot {i}: unreadable report ({e})")
        killed = rmeta["killed"]
        r: dict[str, Any] = {"robot": i, "killed": killed, "exit_code": rmeta["exit_code"],
                             "sigterm_exit_s": rmeta.get("sigterm_exit_s"),
                             "source": "telemetry" if killed else "report",
                             "telemetry_actions": len(actions), "telemetry_events": len(tel.events[i])}
        outcomes: dict[int, str] = {}
        successes = 0
        steps_exec = steps_held = 0
        holds: list[dict[str, Any]] = []
        validity: dict[str, Any] = {}
        chunk_times: list[float] = []  # completed stamps of queued chunks
        exec_times: list[float] = []  # started stamps of exec steps
        if killed:
            if report is not None:
                problems["accounting"].append(f"robot {i} was SIGKILLed but has a report")
            # the killed robot's episodes: those that ended on its telemetry, plus the one it was running
            seen = sorted(set(started_tel) | set(ended_tel) | {int(a[0]) for a in actions if a[0] is not None})
            for ep in seen:
                e = ended_tel.get(ep)
                if e is None:
                    outcomes[ep] = "killed"
                elif e.get("stop_reason") and e.get("stop_reason") != "stop:signal":
                    outcomes[ep] = "safe_stopped"
                else:
                    outcomes[ep] = "finished"
                successes += bool(e and e.get("success"))
            if list(outcomes) != list(range(len(outcomes))):
                problems["accounting"].append(f"robot {i}: episodes seen on telemetry are not 0..n-1: {list(outcomes)}")
            if sum(v == "killed" for v in outcomes.values()) > 1 or (
                    outcomes and "killed" in list(outcomes.values())[:-1]):
                problems["accounting"].append(f"robot {i}: more than one episode without an end, or not the last")
            missing = [ep for ep in seen if ep not in started_tel]
            r["telemetry_starts_missed"] = len(missing)
            # telemetry: an exec step carries the chunk and row it came from
            bad = [a for a in actions if a[3] == "exec" and (a[4] is None or a[5] is None)]
            unknown = [a for a in actions if a[3] not in ("exec", "hold", "stopped")]
            validity = {"exec": sum(a[3] == "exec" for a in actions), "hold": sum(a[3] == "hold" for a in actions),
                        "stopped": sum(a[3] == "stopped" for a in actions), "violations": len(bad) + len(unknown),
                        "examples": [f"telemetry step {a[1]} of episode {a[0]}: decision {a[3]}, chunk {a[4]}, row {a[5]}"
                                     for a in (bad + unknown)[:20]], "from": "telemetry"}
            steps_exec, steps_held = validity["exec"], validity["hold"]
            holds = _holds_from_actions(actions, period)
            exec_times = [a[6] for a in actions if a[3] == "exec"]
            chunk_times = [float(e["stamp"]) for e in tel.of(i, "chunk_queued")]
        else:
            if report is None:
                problems["accounting"].append(f"robot {i}: no report at {report_path}")
                report = {"episodes": [], "records": []}
            if rmeta["exit_code"] != 0:
                problems["exits"].append(f"robot {i} exited with {rmeta['exit_code']} (0 expected after SIGTERM)")
            eps = report.get("episodes", [])
            recs = {int(rec["episode"]): rec for rec in report.get("records", [])}
            idx = [int(e["episode"]) for e in eps]
            if idx != list(range(len(idx))):
                problems["accounting"].append(f"robot {i}: report episodes are not 0..n-1: {idx}")
            tel_seen = set(started_tel) | set(ended_tel) | {int(a[0]) for a in actions if a[0] is not None}
            if tel_seen - set(idx):
                problems["accounting"].append(
                    f"robot {i}: episodes {sorted(tel_seen - set(idx))} ran (telemetry) but are not in the report")
            r["telemetry_starts_missed"] = len(set(idx) - set(started_tel))
            for e in eps:
                ep = int(e["episode"])
                if e.get("stop_reason") and e["stop_reason"] != "stop:signal":
                    outcomes[ep] = "safe_stopped"
                elif e.get("interrupted"):
                    outcomes[ep] = "interrupted"
                else:
                    outcomes[ep] = "finished"
                successes += bool(e.get("success"))
                rec = recs.get(ep)
                if rec is None:
                    problems["accounting"].append(f"robot {i}: episode {ep} has no records")
                    continue
                if len(rec["steps"]) != e["steps"]:
                    problems["accounting"].append(
                        f"robot {i}: episode {ep} has {e['steps']} steps but {len(rec['steps'])} step records")
                v = check_steps(rec["steps"], rec["chunks"], fixed_rows, delta)
                for k, val in v.items():
                    if k == "examples":
                        validity.setdefault("examples", []).extend(f"episode {ep} {x}" for x in val)
                    else:
                        validity[k] = validity.get(k, 0) + val
                holds += _holds_from_steps(rec["steps"], period)
                exec_times += [s["started"] for s in rec["steps"] if s.get("decision") == "exec"]
                chunk_times += [c["completed"] for c in rec["chunks"] if c.get("chunk_id") is not None
                                and c.get("completed") is not None]
            validity["from"] = "records"
            steps_exec, steps_held = validity.get("exec", 0), validity.get("hold", 0)
            interrupted = [ep for ep, o in outcomes.items() if o == "interrupted"]
            if interrupted and interrupted != [max(outcomes)]:
                problems["accounting"].append(f"robot {i}: interrupted episodes {interrupted}: only the last may be")
            if len(recs) != len(eps):
                problems["accounting"].append(f"robot {i}: {len(eps)} episodes but {len(recs)} records")
        if validity.get("violations"):
            problems["validity"].append(f"robot {i}: {validity['violations']} steps: " + "; ".join(validity["examples"][:5]))
        if any(o == "safe_stopped" for o in outcomes.values()):
            problems["safe_stop"].append(f"robot {i}: safe-stopped")

        # reconnects: per outage, the first chunk from the restarted server (queued after its spawn)
        chunk_times.sort()
        exec_times.sort()
        gone = rmeta["killed_at"] if killed else None
        reconnects = []
        for o in run.outages:
            if gone is not None and gone < o.t_kill:
                reconnects.append(None)
                continue
            first = next((t for t in chunk_times if t > o.t_spawn), None)
            resume = next((t for t in exec_times if first is not None and t >= first), None)
            nxt = next((p.t_kill for p in run.outages if p.t_kill > o.t_kill), run.t_end)
            if gone is not None:
                nxt = min(nxt, gone)
            if first is None or first > nxt:
                problems["reconnect"].append(f"robot {i}: no chunk from the server restarted after outage {o.k + 1}")
                reconnects.append({"outage": o.k + 1, "chunk_after_kill_s": None})
                continue
            rc_ev = next((float(e["stamp"]) for e in tel.of(i, "reconnected") if float(e["stamp"]) > o.t_spawn), None)
            reconnects.append({
                "outage": o.k + 1,
                "chunk_after_kill_s": first - o.t_kill,
                "chunk_after_ready_s": first - o.t_ready,
                "reconnected_after_ready_s": None if rc_ev is None else rc_ev - o.t_ready,
                "resumed_after_kill_s": None if resume is None else resume - o.t_kill,
            })
        for h in holds:
            h["outage"] = any(h["t0"] < b + 1.0 and h["t1"] > a for a, b in windows)
        counts = {k: sum(v == k for v in outcomes.values()) for k in ("finished", "interrupted", "killed", "safe_stopped")}
        hold_s = [h["t1"] - h["t0"] for h in holds]
        r.update({
            "episodes_started": len(outcomes), **counts, "successes": successes,
            "outcomes": {str(k): v for k, v in outcomes.items()},
            "steps_executed": steps_exec, "steps_held": steps_held, "validity": validity,
            "holds": len(holds), "holds_during_outages": sum(h["outage"] for h in holds),
            "holds_at_episode_start": sum(h["episode_start"] and not h["outage"] for h in holds),
            "hold_s_total": float(sum(hold_s)), "hold_s_max": max(hold_s) if hold_s else 0.0,
            "hold_s_p50": _q(hold_s, 0.5),
            "hold_list": [{k: (v - run.t0 if k in ("t0", "t1") else v) for k, v in h.items()} for h in holds],
            "reconnects": reconnects,
            "killed_at_s": None if gone is None else gone - run.t0,
        })
        robots_out.append(r)

    if run.error:
        problems["run"].append(run.error)
    if len(run.outages) != args.server_restarts:
        problems["run"].append(f"{len(run.outages)} of {args.server_restarts} server restarts done")
    n_killed = sum(r["killed_at"] is not None for r in run.robots)
    if n_killed != args.kill_robots:
        problems["run"].append(f"{n_killed} of {args.kill_robots} robots killed (a robot to kill had already exited?)")
    if run.server_exit != 0:
        problems["exits"].append(f"the server exited with {run.server_exit} on the final SIGTERM (0 expected)")
    checks["the run went as planned (every restart, every kill)"] = {"ok": not problems["run"], "problems": problems["run"]}
    checks["every episode accounted for"] = {"ok": not problems["accounting"], "problems": problems["accounting"]}
    checks["no unvalidated action"] = {"ok": not problems["validity"], "problems": problems["validity"]}
    checks["every robot reconnected after every restart"] = {"ok": not problems["reconnect"],
                                                             "problems": problems["reconnect"]}
    checks["no safe stop"] = {"ok": not problems["safe_stop"], "problems": problems["safe_stop"]}
    checks["clean exits (robots 0 on SIGTERM, server 0 on SIGTERM)"] = {"ok": not problems["exits"],
                                                                        "problems": problems["exits"]}
    rec_all = [x for r in robots_out for x in r["reconnects"] if x and x.get("chunk_after_kill_s") is not None]
    after_kill = [x["chunk_after_kill_s"] for x in rec_all]
    after_ready = [x["chunk_after_ready_s"] for x in rec_all]
    totals = {k: sum(r[k] for r in robots_out) for k in
              ("episodes_started", "finished", "interrupted", "killed", "safe_stopped", "successes",
               "steps_executed", "steps_held", "holds", "holds_during_outages", "holds_at_episode_start")}
    totals["steps_checked"] = sum(r["validity"].get("exec", 0) + r["validity"].get("hold", 0)
                                  + r["validity"].get("stopped", 0) for r in robots_out)
    totals["violations"] = sum(r["validity"].get("violations", 0) for r in robots_out)
    return {
        "args": run.args, "task": run.info, "endpoint": run.endpoint,
        "startup_s": run.t0 - run.t_start, "soak_s": run.t_end - run.t0,
        "server": {"first_ready_s": run.server_first_ready_s, "final_exit": run.server_exit,
                   "final_exit_s": run.server_exit_s,
                   "outages": [{"outage": o.k + 1, "planned_s": o.planned_s, "killed_s": o.t_kill - run.t0,
                                "ready_s": o.t_ready - run.t0, "down_s": o.down_s, "startup_s": o.startup_s,
                                "killed_exit": o.killed_exit} for o in run.outages]},
        "robots": robots_out, "totals": totals,
        "reconnect": {"n": len(after_kill), "chunk_after_kill_s_p50": _q(after_kill, 0.5),
                      "chunk_after_kill_s_max": max(after_kill) if after_kill else None,
                      "chunk_after_ready_s_p50": _q(after_ready, 0.5),
                      "chunk_after_ready_s_max": max(after_ready) if after_ready else None},
        "telemetry_decode_errors": tel.errors,
        "checks": checks, "ok": all(c["ok"] for c in checks.values()),
        "watchdog": {"stop_after_s": args.stop_after_s, "loop_stall_s": args.loop_stall_s,
                     "decision": "stop_after_s above an outage: outages end in a hold and a resume; a safe stop is "
                                 "still accounted for (outcome safe_stopped, exit 3) and fails 'no safe stop'"},
    }


# ------------------------------------------------------------------------------------------ output
def _f(v: Any, digits: int = 2) -> str:
    if v is None:
        return "-"
    if isinstance(v, float):
        return f"{v:.{digits}f}" if math.isfinite(v) else "-"
    return str(v)


def summary_lines(res: dict[str, Any]) -> list[str]:
    a, t = res["args"], res["totals"]
    lines = [
        f"soak: {a['robots']} robots x {res['soak_s'] / 60:.2f} min, task {a['task']}:{a['variant']}, policy "
        f"{a['policy']}, mode {a['mode']}; {len(res['server']['outages'])} server restarts, {a['kill_robots']} robot(s) killed",
        f"episodes: {t['episodes_started']} started = {t['finished']} finished + {t['interrupted']} interrupted (SIGTERM) "
        f"+ {t['killed']} killed + {t['safe_stopped']} safe-stopped; {t['successes']} successful",
        f"steps: {t['steps_executed']} executed, {t['steps_held']} held; {t['steps_checked']} checked, "
        f"{t['violations']} unvalidated",
        f"holds: {t['holds']} ({t['holds_during_outages']} during outages, {t['holds_at_episode_start']} at an episode start)",
    ]
    rc = res["reconnect"]
    lines.append(f"reconnect (server killed -> first chunk from the restarted server), {rc['n']} robot-outages: "
                 f"p50 {_f(rc['chunk_after_kill_s_p50'])} s, max {_f(rc['chunk_after_kill_s_max'])} s; "
                 f"after the server was ready: p50 {_f(rc['chunk_after_ready_s_p50'])} s, max {_f(rc['chunk_after_ready_s_max'])} s")
    for o in res["server"]["outages"]:
        lines.append(f"  outage {o['outage']}: killed at {o['killed_s']:.1f} s, ready at {o['ready_s']:.1f} s "
                     f"(down {o['down_s']:.1f} s, start {o['startup_s']:.1f} s)")
    exits = [r["sigterm_exit_s"] for r in res["robots"] if r.get("sigterm_exit_s") is not None]
    lines.append(f"server: first start {res['server']['first_ready_s']:.1f} s; final SIGTERM exit "
                 f"{res['server']['final_exit']} after {_f(res['server']['final_exit_s'])} s; robots SIGTERM -> exit "
                 f"at most {_f(max(exits) if exits else None)} s")
    hdr = "robot | exit | from | episodes | fin | int | killed | stop | steps exec/held | holds (outage) | hold s total/max | reconnect s (after kill, per outage)"
    lines.append(hdr)
    for r in res["robots"]:
        rec = ", ".join("-" if x is None else _f(x.get("chunk_after_kill_s")) for x in r["reconnects"]) or "-"
        lines.append(
            f"{r['robot']:>5} | {_f(r['exit_code']):>4} | {r['source']:<9} | {r['episodes_started']:>8} | {r['finished']:>3} | "
            f"{r['interrupted']:>3} | {r['killed']:>6} | {r['safe_stopped']:>4} | {r['steps_executed']}/{r['steps_held']} | "
            f"{r['holds']} ({r['holds_during_outages']}) | {r['hold_s_total']:.1f}/{r['hold_s_max']:.1f} | {rec}"
            + (f"  [killed at {r['killed_at_s']:.1f} s]" if r["killed_at_s"] is not None else ""))
    for name, c in res["checks"].items():
        lines.append(f"{'PASS' if c['ok'] else 'FAIL'}: {name}" + ("" if c["ok"] else ": " + "; ".join(c["problems"][:5])))
    return lines


def write_markdown(res: dict[str, Any], path: Path) -> None:
    a, t = res["args"], res["totals"]
    md = [
        "# Soak: sim-robots on one policy server, server killed and restarted, a robot killed", "",
        f"`benchmarks/soak.py --robots {a['robots']} --minutes {a['minutes']:g} --server_restarts {a['server_restarts']} "
        f"--kill_robots {a['kill_robots']} --task {a['task']} --variant {a['variant']} --policy {a['policy']} "
        f"--mode {a['mode']} --down_s {a['down_s']:g}`", "",
        f"Soak {res['soak_s']:.1f} s (robots running {res['startup_s']:.1f} s after their spawn). Watchdog: "
        f"stop_after_s {a['stop_after_s']:g} s, loop_stall_s {a['loop_stall_s']:g} s ({res['watchdog']['decision']}).", "",
        "## Checks", "",
        *[f"- **{'PASS' if c['ok'] else 'FAIL'}** {name}" + ("" if c["ok"] else ": " + "; ".join(c["problems"][:10]))
          for name, c in res["checks"].items()], "",
        "## Totals", "",
        "| episodes started | finished | interrupted (SIGTERM) | killed | safe-stopped | successful | steps executed | steps held | steps checked | unvalidated | holds | during outages |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|",
        f"| {t['episodes_started']} | {t['finished']} | {t['interrupted']} | {t['killed']} | {t['safe_stopped']} | "
        f"{t['successes']} | {t['steps_executed']} | {t['steps_held']} | {t['steps_checked']} | {t['violations']} | "
        f"{t['holds']} | {t['holds_during_outages']} |", "",
        "## Server outages", "",
        "| outage | killed at s | ready at s | down s | start s |", "|---|---|---|---|---|",
        *[f"| {o['outage']} | {o['killed_s']:.1f} | {o['ready_s']:.1f} | {o['down_s']:.2f} | {o['startup_s']:.2f} |"
          for o in res["server"]["outages"]], "",
        f"Final SIGTERM: exit {res['server']['final_exit']} after {_f(res['server']['final_exit_s'])} s.", "",
        "## Robots", "",
        "| robot | exit | from | episodes | finished | interrupted | killed | safe-stopped | exec | held | holds | in outages | hold s total | hold s max |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|---|---|",
        *[f"| {r['robot']}{' (killed at %.1f s)' % r['killed_at_s'] if r['killed_at_s'] is not None else ''} | "
          f"{_f(r['exit_code'])} | {r['source']} | {r['episodes_started']} | {r['finished']} | {r['interrupted']} | "
          f"{r['killed']} | {r['safe_stopped']} | {r['steps_executed']} | {r['steps_held']} | {r['holds']} | "
          f"{r['holds_during_outages']} | {r['hold_s_total']:.1f} | {r['hold_s_max']:.1f} |" for r in res["robots"]], "",
        "## Reconnect times (s)", "",
        "Per robot and outage: server killed -> first chunk from the restarted server / restarted server ready -> "
        "that chunk / server killed -> first executed step after it.", "",
        "| robot | " + " | ".join(f"outage {o['outage']}" for o in res["server"]["outages"]) + " |",
        "|---|" + "---|" * len(res["server"]["outages"]),
    ]
    for r in res["robots"]:
        cells = []
        for x in r["reconnects"]:
            if x is None:
                cells.append("(killed)")
            elif x.get("chunk_after_kill_s") is None:
                cells.append("**none**")
            else:
                cells.append(f"{x['chunk_after_kill_s']:.2f} / {x['chunk_after_ready_s']:.2f} / {_f(x.get('resumed_after_kill_s'))}")
        md.append(f"| {r['robot']} | " + " | ".join(cells) + " |")
    rc = res["reconnect"]
    md += ["", f"Over {rc['n']} robot-outages: after the kill p50 {_f(rc['chunk_after_kill_s_p50'])} s, max "
               f"{_f(rc['chunk_after_kill_s_max'])} s; after the server was ready p50 {_f(rc['chunk_after_ready_s_p50'])} s, "
               f"max {_f(rc['chunk_after_ready_s_max'])} s.", "", "![timeline](soak_timeline.png)", ""]
    path.write_text("\n".join(md))


def plot_timeline(res: dict[str, Any], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from policy_steer.bench.plots import save_figure

    robots = res["robots"]
    fig, ax = plt.subplots(figsize=(12, 1.0 + 0.45 * len(robots)))
    for n, o in enumerate(res["server"]["outages"]):
        ax.axvspan(o["killed_s"], o["ready_s"], color="tab:red", alpha=0.2, lw=0,
                   label="server down (killed -> ready)" if n == 0 else None)
    for r in robots:
        y = r["robot"]
        spans = [(h["t0"], max(h["t1"] - h["t0"], 0.05)) for h in r["hold_list"]]
        if spans:
            ax.broken_barh(spans, (y - 0.3, 0.6), facecolors="black")
        if r["killed_at_s"] is not None:
            ax.plot([r["killed_at_s"]], [y], marker="x", color="tab:red", ms=10, mew=2)
    ax.axvline(res["soak_s"], color="gray", ls="--", lw=1, label="SIGTERM (end)")
    ax.set_yticks([r["robot"] for r in robots])
    ax.set_yticklabels([f"robot {r['robot']}" + (" (killed)" if r["killed"] else "") for r in robots])
    ax.set_xlabel("seconds since every robot started its first episode")
    ax.set_title("holds per robot (black); server outages shaded; x: robot SIGKILLed")
    ax.invert_yaxis()
    ax.legend(loc="upper left", bbox_to_anchor=(1.0, 1.0), fontsize=8)
    save_figure(fig, path)


def save_telemetry(tel: Telemetry, out: Path) -> None:
    for i, events in tel.events.items():
        with open(out / "telemetry" / f"robot-{i}.events.jsonl", "w") as f:
            for e in events:
                f.write(json.dumps(e, default=str) + "\n")


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    out = Path(args.out)
    if not out.is_absolute():
        out = REPO / out
    existing = [p for p in (*RESULT_FILES, "robots", "logs", "telemetry") if (out / p).exists()]
    if existing and not args.overwrite:
        print(f"soak: {out} already has results ({', '.join(existing)}); pass --overwrite to replace them",
              file=sys.stderr)
        return 2
    for p in existing:
        target = out / p
        shutil.rmtree(target) if target.is_dir() else target.unlink()
    out.mkdir(parents=True, exist_ok=True)
    if args.policy != FIXED and not (REPO / args.policy).exists() and not Path(args.policy).exists():
        print(f"soak: no checkpoint at {args.policy}", file=sys.stderr)
        return 2
    run, tel = run_soak(args, out)
    save_telemetry(tel, out)
    res = analyze(run, tel, args)
    (out / "soak.json").write_text(json.dumps(res, indent=1, default=str))
    write_markdown(res, out / "soak.md")
    try:
        plot_timeline(res, out / "soak_timeline.png")
    except Exception as e:  # noqa: BLE001 - the figures are written either way
        print(f"soak: the timeline plot failed: {type(e).__name__}: {e}", file=sys.stderr)
    for line in summary_lines(res):
        print(line, flush=True)
    print(f"soak: wrote {out / 'soak.json'}, {out / 'soak.md'}, {out / 'soak_timeline.png'}", flush=True)
    return 0 if res["ok"] else 1


if __name__ == "__main__":
    sys.exit(main())
