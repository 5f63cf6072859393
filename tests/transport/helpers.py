"""Helpers for the transport tests: a fixed-chunk server in its own OS process, and a raw client.

``RawClient`` is written from docs/protocol.md alone (pyzmq + msgpack, nothing from policy_steer), so the
tests that use it check the wire format itself, as a client in another language would see it.
"""

from __future__ import annotations

import collections
import os
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

import msgpack
import numpy as np
import zmq

REPO = Path(__file__).resolve().parents[2]
PYTHON = sys.executable


class ServerProcess:
    """``python -m policy_steer.transport.fixed_policy ...`` (or any command printing a ready line)."""

    def __init__(
        self,
        args: list[str],
        module: str = "policy_steer.transport.fixed_policy",
        ready_word: str = "ready",
        timeout_s: float = 30.0,
    ) -> None:
        self.args = list(args)
        self.module = module
        self.ready_word = ready_word
        self.timeout_s = timeout_s
        self.proc: subprocess.Popen | None = None
        self.endpoint: str | None = None
        self.start()

    def _command(self) -> list[str]:
        if self.module == "cli":
            return [PYTHON, "-m", "policy_steer.cli.main", *self.args]
        return [PYTHON, "-m", self.module, *self.args]

    def start(self) -> ServerProcess:
        env = dict(os.environ, HF_HUB_OFFLINE="1", PYTHONUNBUFFERED="1")
        self.proc = subprocess.Popen(
            self._command(), cwd=REPO, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
        )
        # drain stderr so a chatty server never blocks on a full pipe; keep the tail for error messages
        self.stderr_tail: collections.deque[str] = collections.deque(maxlen=200)
        threading.Thread(target=lambda: self.stderr_tail.extend(self.proc.stderr), daemon=True).start()
        deadline = time.monotonic() + self.timeout_s
        while time.monotonic() < deadline:
            line = self.proc.stdout.readline()
            if not line:
                if self.proc.poll() is not None:
                    time.sleep(0.2)
                    raise RuntimeError(
                        f"server exited with {self.proc.returncode}: {''.join(self.stderr_tail)[-2000:]}"
                    )
                continue
            if self.ready_word in line:
                words = line.replace(",", " ").split()
                self.endpoint = next(w for w in words if w.startswith("tcp://"))
                self.telemetry = next(
                    (w.split("=", 1)[1] for w in words if w.startswith("telemetry=") and "tcp://" in w), None
                )
                if self.telemetry is None:
                    tcp = [w for w in words if w.startswith("tcp://")]
                    self.telemetry = tcp[1] if len(tcp) > 1 else None
                return self
        self.kill()
        raise RuntimeError("server did not become ready in time")

    @property
    def pid(self) -> int:
        return self.proc.pid

    def alive(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def kill(self) -> None:
        if self.alive():
            self.proc.kill()
            self.proc.wait(10)

    def terminate(self, timeout_s: float = 10.0) -> int:
        self.proc.terminate()
        return self.proc.wait(timeout_s)

    def restart_same_port(self) -> ServerProcess:
        """Start again, binding the endpoint the previous run got."""
        args = list(self.args)
        i = args.index("--bind")
        args[i + 1] = self.endpoint
        self.args = args
        return self.start()


class RawClient:
    """A DEALER that speaks the protocol by hand: header maps in, (header, frames) out."""

    def __init__(self, endpoint: str, context: zmq.Context | None = None, version: int = 2) -> None:
        self.context = context or zmq.Context.instance()
        self.version = version
        self.sock = self.context.socket(zmq.DEALER)
        self.sock.setsockopt(zmq.LINGER, 0)
        self.sock.connect(endpoint)
        self.seq = 0

    def header(self, msg_type: str, **keys: Any) -> dict[str, Any]:
        self.seq += 1
        return {"v": self.version, "type": msg_type, "seq": self.seq, "stamp": time.monotonic(), "arrays": [], **keys}

    def send(self, header: dict[str, Any], arrays: dict[str, np.ndarray] | None = None) -> int:
        frames = []
        if arrays:
            header = dict(
                header, arrays=[{"name": k, "dtype": a.dtype.str, "shape": list(a.shape)} for k, a in arrays.items()]
            )
            frames = [np.ascontiguousarray(a).tobytes() for a in arrays.values()]
        self.sock.send_multipart([msgpack.packb(header), *frames])
        return header["seq"]

    def send_raw(self, frames: list[bytes]) -> None:
        self.sock.send_multipart(frames)

    def recv(self, timeout_s: float = 5.0) -> tuple[dict[str, Any], list[bytes]]:
        if not self.sock.poll(int(timeout_s * 1000)):
            raise TimeoutError("no reply")
        frames = self.sock.recv_multipart()
        return msgpack.unpackb(frames[0]), frames[1:]

    def request(
        self, msg_type: str, arrays: dict[str, np.ndarray] | None = None, timeout_s: float = 5.0, **keys: Any
    ) -> tuple[dict[str, Any], list[bytes]]:
        seq = self.send(self.header(msg_type, **keys), arrays)
        while True:
            h, frames = self.recv(timeout_s)
            if h.get("re") == seq or (h["type"] == "error" and "re" not in h):
                return h, frames

    def hello(self) -> dict[str, Any]:
        h, _ = self.request("hello", client="raw-test", control_hz=10.0)
        assert h["type"] == "welcome", h
        return h

    def quiet(self, timeout_s: float = 0.5) -> list[dict[str, Any]]:
        """Every message that arrives within ``timeout_s`` (a notification's silence is an empty list)."""
        got = []
        while self.sock.poll(int(timeout_s * 1000)):
            got.append(msgpack.unpackb(self.sock.recv_multipart()[0]))
        return got

    def close(self) -> None:
        self.sock.close(linger=0)


# An episode context written by hand, as plain data (docs/protocol.md, "The episode context").
SCENE = {
    "task": "push",
    "variant": "obstacle",
    "instruction": "push the block into the target region",
    "frame": "world",
    "objects": [
        {"name": "block", "kind": "manipuland", "shape": "box", "position": [0.4, 0.0, 0.025], "half_size": [0.025] * 3},
        {"name": "target", "kind": "target", "shape": "cylinder", "position": [0.6, 0.1, 0.0], "half_size": [0.05, 0.05, 0.001]},
    ],
}
CONTEXT = {
    "instruction": "push the block into the target region",
    "task": "push",
    "variant": "obstacle",
    "seed": 5,
    "stamp": 1.0,
    "scene": SCENE,
    "robot": {"action_mode": "delta", "state_layout": {"ee_pos": [0, 3]}, "robot_state_dim": 9, "max_step": 0.03},
}


def with_block_at(context: dict, position: list[float], stamp: float) -> dict:
    """The same context with the block moved (a mid-episode update)."""
    scene = dict(context["scene"])
    scene["objects"] = [dict(o, position=position) if o["name"] == "block" else o for o in scene["objects"]]
    return {**context, "scene": scene, "stamp": stamp}


def observation(spec_obs: dict[str, dict[str, Any]], seed: int = 0) -> dict[str, np.ndarray]:
    """Random arrays matching a welcome's ``observation`` map."""
    rng = np.random.default_rng(seed)
    out = {}
    for key, f in spec_obs.items():
        shape = tuple(f["shape"])
        if f["dtype"] == "|u1":
            out[key] = rng.integers(0, 256, shape, dtype=np.uint8)
        else:
            out[key] = rng.standard_normal(shape).astype(np.dtype(f["dtype"]))
    return out


def rss_bytes(pid: int) -> int:
    """Resident memory of a process (Linux /proc, no extra dependency)."""
    with open(f"/proc/{pid}/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")
