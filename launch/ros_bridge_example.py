#!/usr/bin/env python3
"""A worked example of a process next to ROS: a bridge node that speaks docs/protocol.md (v2) by hand.

It imports pyzmq, msgpack and the standard library only (no policy_steer, no numpy), so it is what a
ROS node (rclpy, or a C++ node written from docs/protocol.md) would do, minus the ROS calls:

- **client of the policy server** (DEALER): ``hello`` -> ``welcome`` (the observation keys, dtypes and
  shapes, the action shape), then ``episode`` with the episode context (the instruction, and the scene
  of ``--scene FILE.json``: what a steering strategy such as VLS needs; in ROS, what a perception node
  publishes) -> ``episode_started``; a refused episode (e.g. ``context_required``: VLS without a scene)
  ends the bridge with the server's reason, never runs unsteered in silence. Then every control tick:
  take the latest observation (here from a simulated source or a JSON-lines file; in ROS, the last
  ``/joint_states`` and camera messages), send ``observe`` when few actions are left, keep the returned
  chunk's actions keyed by control step, "publish" the action for the current step (in ROS: a ``/cmd``
  message) and tell the server what ran (``executed``). With no action for the step it holds
  (publishes nothing new). It answers the server's pings and pings it every second; after a server
  restart it says ``hello`` and sends its ``episode`` again;
- **subscriber of the server's telemetry** (SUB: ``chunk``, ``executed``, ``metrics``, ``event``) and,
  optionally, of a **robot's telemetry** (SUB: ``action``, ``event``; the robot-side convention written
  down in policy_steer/transport/robot_telemetry.py), as a bridge would republish them as ROS topics.

    python launch/ros_bridge_example.py --server tcp://127.0.0.1:5555 --telemetry tcp://127.0.0.1:5556 \\
        --robot_telemetry tcp://127.0.0.1:5557 --rate 10 --steps 100 --json bridge.json \\
        --instruction "push the block onto the target" --scene scene.json

To *see* a run as ROS 2 data rather than bridge one, no bridge is needed: ``--record_bag DIR`` on
``bench``, ``sim-robot``, ``robot`` and ``serve`` writes standard ROS 2 bags (rosbag2 folders, MCAP:
``/joint_states``, ``/tf``, camera images, every TACO candidate and VLS particle as markers,
``/diagnostics``) that ``ros2 bag play``, RViz and Foxglove read, and ``--foxglove PORT`` serves the same
topics live (``policy_steer/recording/``, ``docs/foxglove_layout.json``, ``policy-steer bag summary DIR``).

It prints ``ros-bridge: welcome ...`` once the server answered (a readiness line for ``policy-steer
launch``) and a summary at the end; SIGINT or SIGTERM end it cleanly.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import signal
import struct
import sys
import time
from typing import Any

import msgpack
import zmq

PROTOCOL_VERSION = 2
# numpy-style dtype strings of docs/protocol.md -> struct format characters (little-endian)
STRUCT = {"<f4": "f", "<f8": "d", "<f2": "e", "|u1": "B", "|i1": "b", "<u2": "H", "<i2": "h", "<i4": "i",
          "<i8": "q", "|b1": "?"}
ITEMSIZE = {k: struct.calcsize("<" + v) for k, v in STRUCT.items()}


def _prod(shape: list[int]) -> int:
    n = 1
    for d in shape:
        n *= int(d)
    return n


# --- observations ------------------------------------------------------------------------------------
class SimulatedSource:
    """Observations of the shapes the server asked for: slow sine waves for floats, a moving pattern for images."""

    def __init__(self, spec: dict[str, dict[str, Any]]) -> None:
        self.spec = spec
        self._patterns = {
            k: bytes(i % 251 for i in range(_prod(f["shape"]) + 256)) for k, f in spec.items() if f["dtype"] == "|u1"
        }

    def read(self, step: int) -> dict[str, bytes]:
        out = {}
        for key, f in self.spec.items():
            n, dtype = _prod(f["shape"]), f["dtype"]
            if dtype == "|u1":
                k = step % 256
                out[key] = self._patterns[key][k:k + n]
            elif dtype in ("<f2", "<f4", "<f8"):
                vals = [0.1 * math.sin(0.05 * step + 0.3 * i) for i in range(n)]
                out[key] = struct.pack("<%d%s" % (n, STRUCT[dtype]), *vals)
            else:
                out[key] = bytes(n * ITEMSIZE[dtype])
        return out


class FileSource:
    """Observations from a JSON-lines file (one ``{key: flat list of numbers}`` per line), replayed in a loop."""

    def __init__(self, spec: dict[str, dict[str, Any]], path: str) -> None:
        self.spec = spec
        with open(path) as f:
            self.rows = [json.loads(line) for line in f if line.strip()]
        if not self.rows:
            raise SystemExit(f"ros-bridge: {path} holds no observations")

    def read(self, step: int) -> dict[str, bytes]:
        row = self.rows[step % len(self.rows)]
        out = {}
        for key, f in self.spec.items():
            n, dtype = _prod(f["shape"]), f["dtype"]
            vals = row.get(key)
            if vals is None or len(vals) != n:
                raise SystemExit(f"ros-bridge: observation {key!r} needs {n} values, the file has {None if vals is None else len(vals)}")
            out[key] = struct.pack("<%d%s" % (n, STRUCT[dtype]), *vals)
        return out


# --- the wire format -----------------------------------------------------------------------------------
class Wire:
    """Frame 0 a msgpack header, then one raw frame per array (docs/protocol.md, "Messages and framing")."""

    def __init__(self) -> None:
        self.seq = 0

    def encode(self, msg_type: str, arrays: dict[str, tuple[str, list[int], bytes]] | None = None, **keys: Any) -> tuple[int, list[bytes]]:
        self.seq += 1
        arrays = arrays or {}
        header = {"v": PROTOCOL_VERSION, "type": msg_type, "seq": self.seq, "stamp": time.monotonic(),
                  "arrays": [{"name": k, "dtype": d, "shape": list(s)} for k, (d, s, _) in arrays.items()], **keys}
        return self.seq, [msgpack.packb(header, use_bin_type=True)] + [buf for _, _, buf in arrays.values()]

    @staticmethod
    def decode(frames: list[bytes]) -> tuple[dict[str, Any], dict[str, tuple[str, list[int], bytes]]]:
        header = msgpack.unpackb(frames[0], raw=False)
        if not isinstance(header, dict):
            raise ValueError("header is not a map")
        specs = header.get("arrays") or []
        if len(specs) != len(frames) - 1:
            raise ValueError(f"{len(specs)} arrays declared, {len(frames) - 1} frames")
        arrays = {}
        for spec, buf in zip(specs, frames[1:]):
            dtype, shape = spec["dtype"], list(spec["shape"])
            if dtype not in ITEMSIZE or len(buf) != _prod(shape) * ITEMSIZE[dtype]:
                raise ValueError(f"array {spec.get('name')!r}: {dtype} {shape} does not match {len(buf)} bytes")
            arrays[spec["name"]] = (dtype, shape, buf)
        return header, arrays


def rows_of(array: tuple[str, list[int], bytes]) -> list[tuple[float, ...]]:
    """A [H, A] float array as H tuples."""
    dtype, shape, buf = array
    h, a = shape
    flat = struct.unpack("<%d%s" % (h * a, STRUCT[dtype]), buf)
    return [tuple(flat[i * a:(i + 1) * a]) for i in range(h)]


# --- the node ----------------------------------------------------------------------------------------------
class BridgeNode:
    def __init__(self, args: argparse.Namespace) -> None:
        self.args = args
        self.ctx = zmq.Context()
        self.wire = Wire()
        self.dealer = self.ctx.socket(zmq.DEALER)
        self.dealer.setsockopt(zmq.LINGER, 0)
        self.dealer.connect(args.server)
        self.poller = zmq.Poller()
        self.poller.register(self.dealer, zmq.POLLIN)
        self.subs: dict[zmq.Socket, str] = {}
        for endpoint, topics, label in ((args.telemetry, ("chunk", "executed", "metrics", "event"), "server"),
                                        (args.robot_telemetry, ("action", "event"), "robot")):
            if endpoint:
                sub = self.ctx.socket(zmq.SUB)
                sub.setsockopt(zmq.LINGER, 0)
                for t in topics:
                    sub.setsockopt(zmq.SUBSCRIBE, t.encode())
                sub.connect(endpoint)
                self.poller.register(sub, zmq.POLLIN)
                self.subs[sub] = label
        self.session: str | None = None
        self.context = episode_context(args)  # sent with every `episode` (after each hello)
        self.episode_seq: int | None = None
        self.episode: dict[str, Any] | None = None  # the last episode_started
        self.refused: str | None = None
        self.welcome: dict[str, Any] | None = None
        self.hello_seq: int | None = None
        self.hello_sent = 0.0
        self.pending: dict[int, str] = {}  # seq -> what (observe, ping)
        self.observe_in_flight: tuple[int, int, float] | None = None  # (seq, start_step, sent_at)
        self.actions: dict[int, tuple[tuple[float, ...], int, int]] = {}  # control step -> (action, start_step, row)
        self.stop = False
        self.stats: dict[str, Any] = {
            "observes": 0, "chunks": 0, "errors": {}, "published": 0, "held": 0, "pings": 0, "pongs": 0,
            "server_pings_answered": 0, "telemetry": {"server": {}, "robot": {}}, "chunk_latency_ms": [],
            "robot_actions_held": 0, "robot_events": [], "server_events": [], "rehellos": 0, "episodes": 0,
            "executed_sent": 0, "strategies": None,
        }
        self.last_action: tuple[float, ...] | None = None

    # -- sending --------------------------------------------------------------------------------------------
    def send(self, msg_type: str, arrays=None, **keys: Any) -> int:
        seq, frames = self.wire.encode(msg_type, arrays, **keys)
        self.dealer.send_multipart(frames)
        return seq

    def hello(self) -> None:
        self.session = None
        self.episode = None
        self.hello_seq = self.send("hello", client=self.args.name, control_hz=float(self.args.rate))
        self.hello_sent = time.monotonic()

    def start_episode(self) -> None:
        """``episode`` with the context (a new session has no episode: after every welcome)."""
        ctx = dict(self.context, stamp=time.monotonic())
        self.episode_seq = self.send("episode", session=self.session, context=ctx)
        self.pending[self.episode_seq] = "episode"

    def observe(self, step: int, obs: dict[str, bytes]) -> None:
        spec = self.welcome["observation"]
        arrays = {k: (spec[k]["dtype"], spec[k]["shape"], obs[k]) for k in spec}
        start = step + self.queued_from(step)  # the chunk takes over where the queued actions end
        seq = self.send("observe", arrays, session=self.session, step=step, start_step=start,
                        state_kind="measured", task=self.args.instruction)
        self.pending[seq] = "observe"
        self.observe_in_flight = (seq, start, time.monotonic())
        self.stats["observes"] += 1

    def queued_from(self, step: int) -> int:
        n = 0
        while step + n in self.actions:
            n += 1
        return n

    # -- receiving -------------------------------------------------------------------------------------------
    def on_server(self, frames: list[bytes]) -> None:
        try:
            header, arrays = Wire.decode(frames)
        except (ValueError, KeyError, TypeError, msgpack.ExtraData, msgpack.FormatError, msgpack.StackError) as e:
            print(f"ros-bridge: bad message from the server: {e}", file=sys.stderr, flush=True)
            return
        kind, re = header.get("type"), header.get("re")
        if kind == "ping":
            self.send("pong", re=header.get("seq"))
            self.stats["server_pings_answered"] += 1
        elif kind == "welcome" and re == self.hello_seq:
            first = self.welcome is None
            self.welcome, self.session = header, header["session"]
            if first:
                pol = header["policy"]
                print(f"ros-bridge: welcome session={self.session} policy={pol['name']} horizon={pol['horizon']} "
                      f"action_dim={pol['action_dim']} observation={sorted(header['observation'])}", flush=True)
            else:
                self.stats["rehellos"] += 1
            self.start_episode()
        elif kind == "episode_started" and re == self.episode_seq:
            self.pending.pop(re, None)
            first = self.stats["episodes"] == 0
            self.episode = header
            self.stats["episodes"] += 1
            self.stats["strategies"] = header.get("strategies")
            if first:
                print(f"ros-bridge: episode started, strategies {header.get('strategies')}", flush=True)
        elif kind == "pong":
            if self.pending.pop(re, None) == "ping":
                self.stats["pongs"] += 1
        elif kind == "chunk":
            what = self.pending.pop(re, None)
            flight = self.observe_in_flight
            if what != "observe" or flight is None or flight[0] != re:
                return  # an answer to a request we gave up on
            self.observe_in_flight = None
            actions = arrays.get("actions")
            want = self.welcome["action"]["shape"]
            if actions is None or actions[0] != "<f4" or actions[1] != want or header.get("start_step") != flight[1]:
                self.stats["errors"]["bad_chunk"] = self.stats["errors"].get("bad_chunk", 0) + 1
                return
            rows = rows_of(actions)
            if not all(math.isfinite(v) for row in rows for v in row):
                self.stats["errors"]["bad_chunk"] = self.stats["errors"].get("bad_chunk", 0) + 1
                return
            n_exec = int(self.welcome["policy"]["n_action_steps"])
            start = int(header["start_step"])
            self.actions = {s: a for s, a in self.actions.items() if s < start}  # the new chunk replaces the rest
            for i, row in enumerate(rows[:n_exec]):
                self.actions[start + i] = (row, start, i)
            self.stats["chunks"] += 1
            self.stats["chunk_latency_ms"].append(round((time.monotonic() - flight[2]) * 1e3, 3))
        elif kind == "error":
            code = header.get("code", "?")
            self.stats["errors"][code] = self.stats["errors"].get(code, 0) + 1
            what = self.pending.pop(re, None) if re is not None else None
            if what == "observe":
                self.observe_in_flight = None  # busy, bad_array, ...: ask again at the next tick
            if what == "episode" and code != "no_session":
                # refused (context_required, context_mismatch, bad_context, ...): never run unsteered in silence
                self.refused = f"{code}: {header.get('message', '')}"
                print(f"ros-bridge: the server refused the episode ({self.refused})", file=sys.stderr, flush=True)
                self.stop = True
            elif code == "no_session" or (re is not None and re == self.hello_seq):
                self.hello()  # the server restarted or forgot us

    def on_telemetry(self, sock: zmq.Socket, label: str) -> None:
        frames = sock.recv_multipart(zmq.NOBLOCK)  # raises zmq.Again when drained
        topic = frames[0].decode(errors="replace")
        try:
            header, arrays = Wire.decode(frames[1:])
        except (ValueError, KeyError, TypeError, msgpack.ExtraData, msgpack.FormatError, msgpack.StackError):
            return
        counts = self.stats["telemetry"][label]
        counts[topic] = counts.get(topic, 0) + 1
        if label == "robot" and topic == "action" and header.get("held"):
            self.stats["robot_actions_held"] += 1
        if topic == "event":
            events = self.stats[f"{label}_events"]
            if len(events) < 200:
                events.append(header.get("event"))

    # -- the control loop -------------------------------------------------------------------------------------
    def publish_command(self, step: int, queued: tuple[tuple[float, ...], int, int] | None) -> None:
        """Where a ROS node would publish the action for this control step (e.g. a JointTrajectory), then
        tell the server what ran (``executed``; a hold repeats nothing new and is reported as one)."""
        if queued is None:
            self.stats["held"] += 1
            return
        action, start, row = queued
        self.stats["published"] += 1
        self.last_action = action
        if self.session is not None:
            dim = len(action)
            buf = struct.pack("<%df" % dim, *action)
            self.send("executed", {"action": ("<f4", [dim], buf), "commanded": ("<f4", [dim], buf)},
                      session=self.session, step=step, chunk_start_step=start, index=row, safety=None)
            self.stats["executed_sent"] += 1

    def run(self) -> int:
        args = self.args
        period = 1.0 / args.rate
        self.hello()
        deadline = time.monotonic() + args.connect_timeout_s
        while self.episode is None and not self.stop:  # wait for the spec and the episode before observing
            if time.monotonic() > deadline:
                what = "no welcome" if self.welcome is None else "no episode_started"
                print(f"ros-bridge: {what} from {args.server} within {args.connect_timeout_s} s", file=sys.stderr)
                return 1
            self.poll(0.1)
            if self.welcome is None and time.monotonic() - self.hello_sent > 1.0:
                self.hello()
        if self.refused is not None:
            return 1
        source = FileSource(self.welcome["observation"], args.source[5:]) if args.source.startswith("file:") \
            else SimulatedSource(self.welcome["observation"])
        t0, step, last_ping = time.monotonic(), 0, 0.0
        while not self.stop and (args.steps == 0 or step < args.steps):
            tick = t0 + step * period
            while not self.stop:
                left = tick - time.monotonic()
                if left <= 0:
                    break
                self.poll(left)
            now = time.monotonic()
            flight = self.observe_in_flight
            if flight is not None and now - flight[2] > args.timeout_s:  # give up; a late answer is ignored
                self.pending.pop(flight[0], None)
                self.observe_in_flight = None
                self.stats["errors"]["timeout"] = self.stats["errors"].get("timeout", 0) + 1
            if (self.session is not None and self.episode is not None and self.observe_in_flight is None
                    and self.queued_from(step) <= args.trigger):
                self.observe(step, source.read(step))
            self.publish_command(step, self.actions.pop(step, None))
            self.actions = {s: a for s, a in self.actions.items() if s > step}
            if now - last_ping > 1.0:
                self.pending[self.send("ping")] = "ping"
                self.stats["pings"] += 1
                last_ping = now
            step += 1
        self.poll(0.2)  # the last telemetry messages
        self.stats["steps"] = step
        return 1 if self.refused is not None else 0

    def poll(self, timeout_s: float) -> None:
        for sock, _ in self.poller.poll(max(0, int(timeout_s * 1000))):
            if sock is self.dealer:
                while True:
                    try:
                        frames = self.dealer.recv_multipart(zmq.NOBLOCK)
                    except zmq.Again:
                        break
                    self.on_server(frames)
            else:
                while True:
                    try:
                        self.on_telemetry(sock, self.subs[sock])
                    except zmq.Again:
                        break

    def close(self) -> None:
        self.dealer.close(linger=0)
        for sub in self.subs:
            sub.close(linger=0)
        self.ctx.term()


def episode_context(args: argparse.Namespace) -> dict[str, Any]:
    """The episode context: ``--instruction``, and ``--scene FILE.json`` (a scene, or a whole context)."""
    ctx: dict[str, Any] = {"instruction": args.instruction}
    if args.scene:
        try:
            with open(args.scene) as f:
                data = json.load(f)
        except (OSError, ValueError) as e:
            raise SystemExit(f"ros-bridge: --scene {args.scene}: {e}") from None
        if isinstance(data, dict) and "objects" in data:
            ctx["scene"] = data
        elif isinstance(data, dict):
            ctx.update(data)
            ctx.setdefault("instruction", args.instruction)
        else:
            raise SystemExit(f"ros-bridge: --scene {args.scene}: a JSON object (a scene or an episode context) expected")
    return ctx


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--server", default="tcp://127.0.0.1:5555", help="the policy server (ROUTER)")
    p.add_argument("--telemetry", default=None, help="the server's telemetry PUB endpoint")
    p.add_argument("--robot_telemetry", default=None, help="a robot process's telemetry PUB endpoint")
    p.add_argument("--rate", type=float, default=10.0, help="control rate, Hz")
    p.add_argument("--steps", type=int, default=0, help="control steps to run (0: until SIGINT/SIGTERM)")
    p.add_argument("--trigger", type=int, default=2, help="send observe when at most this many actions are queued")
    p.add_argument("--timeout_s", type=float, default=2.0, help="give up on an observe after this long")
    p.add_argument("--connect_timeout_s", type=float, default=30.0)
    p.add_argument("--source", default="sim", help="'sim' (a simulated source) or file:PATH (JSON lines)")
    p.add_argument("--instruction", "--task", dest="instruction", default="bridge the gap",
                   help="the instruction: in the episode context and with each observe")
    p.add_argument("--scene", default="", help="JSON file with the scene (or a whole episode context) sent in "
                   "`episode`; the server checks it against policy_steer/schema/episode_context.schema.json")
    p.add_argument("--name", default="ros-bridge-example")
    p.add_argument("--json", default=None, help="write the summary here")
    return p.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    node = BridgeNode(args)

    def stop(*_: Any) -> None:
        node.stop = True

    signal.signal(signal.SIGINT, stop)
    signal.signal(signal.SIGTERM, stop)
    try:
        code = node.run()
    finally:
        node.close()
    lat = sorted(node.stats["chunk_latency_ms"])
    summary = {k: v for k, v in node.stats.items() if k != "chunk_latency_ms"}
    summary["chunk_latency_ms_p50"] = lat[len(lat) // 2] if lat else None
    summary["session"] = node.session
    summary["modules"] = sorted(m for m in sys.modules if m.split(".")[0] in ("policy_steer", "numpy", "torch"))
    print("ros-bridge: summary " + json.dumps(summary), flush=True)
    if args.json:
        os.makedirs(os.path.dirname(os.path.abspath(args.json)), exist_ok=True)  # results/ is not in a fresh clone
        with open(args.json, "w") as f:
            json.dump(summary, f, indent=1)
    return code


if __name__ == "__main__":
    sys.exit(main())
