"""Fuzzing the server: malformed messages from several clients while a well-formed client keeps working.

Every malformed message must get exactly one reply (an ``error`` with the right code where the
category fixes it), the well-formed client must keep getting correct chunks, the server process must
stay up with bounded memory.
"""

from __future__ import annotations

import threading
import time

import msgpack
import numpy as np
import pytest
import zmq

from policy_steer.transport import PolicyClient
from tests.transport.conftest import FIXED_ARGS
from tests.transport.helpers import RawClient, ServerProcess, observation, rss_bytes

EXPECTED_ACTIONS = np.arange(16, dtype=np.float32)[:, None] + np.arange(7, dtype=np.float32)[None, :] / 100
BAD_DTYPES = ["|O", "<c8", "<c16", "<U8", "|S4", "|V8", ">f4", "<f16", "float32", "", "<M8", 4, None, ["<f4"]]


class Fuzzer:
    """One DEALER sending malformed messages of many kinds; checks the reply to each one."""

    def __init__(self, endpoint: str, seed: int, n: int, context: zmq.Context) -> None:
        self.raw = RawClient(endpoint, context)
        self.rng = np.random.default_rng(seed)
        self.n = n
        self.sent = 0
        self.replies = 0
        self.expected: dict[int, tuple[str, set[str]]] = {}  # seq -> (category, acceptable reply codes)
        self.unattributed_expected = 0
        self.unattributed_got = 0
        self.mutated = 0
        self.other_replies = 0  # replies to mutated messages (whose seq may have been mutated too)
        self.mismatches: list[str] = []
        self.codes: dict[str, int] = {}
        self.welcome = self.raw.hello()
        self.session = self.welcome["session"]

    # --- message makers: (frames, seq or None, acceptable codes) --------------------------------
    def _h(self, msg_type: str, **keys) -> dict:
        return self.raw.header(msg_type, **keys)

    def _observe_header(self, **keys) -> dict:
        return self._h(
            "observe",
            session=self.session,
            step=int(self.rng.integers(0, 1000)),
            start_step=0,
            state_kind="measured",
            **keys,
        )

    def _good_arrays(self) -> tuple[list[dict], list[bytes]]:
        arrs = observation(self.welcome["observation"], seed=int(self.rng.integers(1 << 30)))
        return [{"name": k, "dtype": a.dtype.str, "shape": list(a.shape)} for k, a in arrs.items()], [
            a.tobytes() for a in arrs.values()
        ]

    def make(self) -> tuple[str, list[bytes], int | None, set[str]]:
        r = self.rng
        if r.random() < 0.01:  # a real 8 MiB array of the wrong shape: read, refused, freed
            n = 2 * 2**20
            h = self._observe_header(
                arrays=[
                    {"name": "observation.state", "dtype": "<f4", "shape": [n]},
                    {"name": "observation.images.front", "dtype": "|u1", "shape": [8, 8, 3]},
                ]
            )
            return "big_frame", [msgpack.packb(h), bytes(4 * n), bytes(192)], h["seq"], {"bad_array"}
        kind = str(
            r.choice(
                [
                    "random_bytes",
                    "random_frames",
                    "version",
                    "unknown_type",
                    "frame_count",
                    "bad_dtype",
                    "bad_shape",
                    "huge_declared",
                    "long_string",
                    "missing_key",
                    "wrong_key_type",
                    "nan",
                    "no_session",
                    "too_many_frames",
                    "truncated",
                    "mutated",
                    "deep_nesting",
                    "short_frame",
                    "bad_context",
                    "bad_executed",
                ]
            )
        )
        if kind == "random_bytes":
            return kind, [r.bytes(int(r.integers(0, 300)))], None, {"bad_header", "too_large"}
        if kind == "random_frames":
            return (
                kind,
                [r.bytes(int(r.integers(1, 100))) for _ in range(int(r.integers(2, 6)))],
                None,
                {"bad_header", "too_large"},
            )
        if kind == "version":
            h = self._h("ping", v=int(r.choice([0, 1, 3, -1, 2**40])))
            return kind, [msgpack.packb(h)], h["seq"], {"version"}
        if kind == "unknown_type":
            h = self._h(str(r.choice(["", "HELLO", "chunk", "welcome", "exec", "observe2", "x" * 100])))
            return kind, [msgpack.packb(h)], h["seq"], {"unknown_type"}
        if kind == "frame_count":
            specs, bufs = self._good_arrays()
            keep = int(r.integers(0, len(bufs)))
            bufs = bufs[:keep] if r.random() < 0.5 else bufs + [b"extra"]
            h = self._observe_header(arrays=specs)
            return kind, [msgpack.packb(h), *bufs], h["seq"], {"bad_array"}
        if kind == "bad_dtype":
            specs, bufs = self._good_arrays()
            specs[0]["dtype"] = BAD_DTYPES[int(r.integers(len(BAD_DTYPES)))]
            h = self._observe_header(arrays=specs)
            return kind, [msgpack.packb(h), *bufs], h["seq"], {"bad_array"}
        if kind == "bad_shape":
            n = int(r.integers(1, 64))
            n = n + 1 if n == 32 else n
            specs = [
                {"name": "observation.state", "dtype": "<f4", "shape": [n]},
                {"name": "observation.images.front", "dtype": "|u1", "shape": [8, 8, 3]},
            ]
            h = self._observe_header(arrays=specs)
            return kind, [msgpack.packb(h), b"\0" * (4 * n), b"\0" * 192], h["seq"], {"bad_array"}
        if kind == "huge_declared":
            dims = [int(d) for d in r.integers(1 << 20, 1 << 60, int(r.integers(1, 4)))]
            h = self._observe_header(arrays=[{"name": "observation.state", "dtype": "<f8", "shape": dims}])
            return kind, [msgpack.packb(h), b"\0" * 16], h["seq"], {"too_large"}
        if kind == "long_string":
            h = self._observe_header(task="t" * int(r.integers(4097, 6000)))
            return kind, [msgpack.packb(h)], h["seq"], {"too_large"}
        if kind == "missing_key":
            h = self._observe_header()
            del h[str(r.choice(["session", "step", "start_step", "state_kind", "stamp", "arrays"]))]
            return kind, [msgpack.packb(h)], h["seq"], {"bad_header"}
        if kind == "wrong_key_type":
            h = self._observe_header()
            key = str(r.choice(["session", "step", "start_step", "state_kind", "stamp"]))
            h[key] = [1, 2] if key != "session" else 12345
            return kind, [msgpack.packb(h)], h["seq"], {"bad_header"}
        if kind == "nan":
            specs, bufs = self._good_arrays()
            bufs[0] = np.full(32, np.nan, np.float32).tobytes()
            h = self._observe_header(arrays=specs)
            return kind, [msgpack.packb(h), *bufs], h["seq"], {"bad_array"}
        if kind == "no_session":
            specs, bufs = self._good_arrays()
            h = self._observe_header(arrays=specs)
            h["session"] = r.bytes(8).hex()
            return kind, [msgpack.packb(h), *bufs], h["seq"], {"no_session"}
        if kind == "too_many_frames":
            n = int(r.integers(33, 60))
            h = self._h("ping", arrays=[{"name": f"a{i}", "dtype": "|u1", "shape": [1]} for i in range(n)])
            return kind, [msgpack.packb(h), *[b"x"] * n], h["seq"], {"too_large"}
        if kind == "truncated":
            h = msgpack.packb(self._observe_header())
            return kind, [h[: int(r.integers(1, len(h)))]], None, {"bad_header"}
        if kind == "mutated":
            specs, bufs = self._good_arrays()
            header = self._observe_header(arrays=specs)
            header["seq"] = header.pop("seq")  # last, and left intact: a mutated seq could collide with another
            h = bytearray(msgpack.packb(header))
            tail = len(msgpack.packb("seq")) + len(msgpack.packb(header["seq"]))
            for _ in range(int(r.integers(1, 4))):
                h[int(r.integers(len(h) - tail))] = int(r.integers(256))
            return kind, [bytes(h), *bufs], -1, set()  # anything, but exactly one reply
        if kind == "deep_nesting":
            nested: object = 1
            for _ in range(int(r.integers(20, 60))):
                nested = [nested]
            h = self._h("configure", session=self.session, steer={"x": nested})
            return kind, [msgpack.packb(h)], h["seq"], {"too_large"}
        if kind == "bad_context":
            contexts = [
                {"colour": "red"},
                {"seed": "three"},
                {"scene": {"task": "t", "variant": "v", "instruction": "i", "objects": [{"name": "x"}]}},
                {"robot": {"action_mode": "delta", "state_layout": {"ee": [0]}, "robot_state_dim": 1}},
                {"stamp": float("nan")},
            ]
            context = contexts[int(r.integers(len(contexts)))]
            h = self._h(str(r.choice(["episode", "context"])), session=self.session, context=context)
            return kind, [msgpack.packb(h)], h["seq"], {"bad_context"}
        if kind == "bad_executed":
            n = int(r.integers(0, 12))
            n = n + 1 if n == 7 else n
            specs = [
                {"name": "action", "dtype": "<f4", "shape": [n]},
                {"name": "commanded", "dtype": "<f4", "shape": [7]},
            ]
            h = self._h("executed", session=self.session, step=int(r.integers(0, 1000)), arrays=specs)
            return kind, [msgpack.packb(h), b"\0" * (4 * n), b"\0" * 28], h["seq"], {"bad_array"}
        # short_frame: the right header, a frame shorter than it declares
        specs, bufs = self._good_arrays()
        bufs[1] = bufs[1][: int(r.integers(0, 192))]
        h = self._observe_header(arrays=specs)
        return kind, [msgpack.packb(h), *bufs], h["seq"], {"bad_array"}

    # --- the loop ---------------------------------------------------------------------------------
    def _take_reply(self, h: dict) -> None:
        self.replies += 1
        code = h.get("code", h["type"])
        self.codes[code] = self.codes.get(code, 0) + 1
        re = h.get("re")
        if re is None:
            self.unattributed_got += 1
            return
        if re in self.expected:
            kind, ok = self.expected.pop(re)
            if ok and code not in ok:
                self.mismatches.append(f"{kind}: got {code} ({h.get('message')}), expected {sorted(ok)}")
        else:
            self.other_replies += 1

    def run(self, window: int = 100) -> None:
        outstanding = 0
        for _ in range(self.n):
            kind, frames, seq, ok = self.make()
            self.raw.send_raw(frames)
            self.sent += 1
            outstanding += 1
            if seq is None:
                self.unattributed_expected += 1
            elif seq == -1:
                self.mutated += 1
            else:
                self.expected[seq] = (kind, ok)
            while outstanding >= window or (outstanding and self.raw.sock.poll(0)):
                h, _ = self.raw.recv(timeout_s=10)
                self._take_reply(h)
                outstanding -= 1
        while outstanding:
            h, _ = self.raw.recv(timeout_s=10)
            self._take_reply(h)
            outstanding -= 1


def run_fuzz(n_per_fuzzer: int, n_fuzzers: int, rss_slack_mb: float) -> None:
    server = ServerProcess(FIXED_ARGS)
    context = zmq.Context()
    good = PolicyClient(endpoint=server.endpoint, timeout_s=5.0)
    try:
        good.connect()
        good_results: list[str] = []
        good_chunks = [0]
        stop = threading.Event()

        def well_formed() -> None:
            step = 0
            while not stop.is_set():
                obs = observation(good.welcome.raw["observation"], seed=step)
                try:
                    chunk = good.request_chunk(obs, step=step, start_step=step + 1)
                except Exception as e:  # collected and asserted below
                    good_results.append(f"step {step}: {type(e).__name__}: {e}")
                    step += 1
                    continue
                if chunk.start_step != step + 1 or not np.array_equal(chunk.actions, EXPECTED_ACTIONS):
                    good_results.append(f"step {step}: wrong chunk")
                elif chunk.info["echo"]["sums"]["observation.state"] != pytest.approx(
                    float(obs["observation.state"].astype(np.float64).sum()), rel=1e-5, abs=1e-5
                ):
                    good_results.append(f"step {step}: the server saw other data")
                good_chunks[0] += 1
                step += 1

        # Two identical rounds. Memory may rise in the first (buffers of messages in flight, which the
        # allocator keeps for reuse); it must not rise again in the second: bounded, not leaking.
        rss = [rss_bytes(server.pid)]
        fuzzers: list[Fuzzer] = []
        good_thread = threading.Thread(target=well_formed)
        t0 = time.monotonic()
        good_thread.start()
        for round_ in range(2):
            batch = [
                Fuzzer(server.endpoint, seed=100 * round_ + i, n=n_per_fuzzer // 2, context=context)
                for i in range(n_fuzzers)
            ]
            threads = [threading.Thread(target=f.run) for f in batch]
            for t in threads:
                t.start()
            for t in threads:
                t.join(300)
            fuzzers += batch
            rss.append(rss_bytes(server.pid))
        stop.set()
        good_thread.join(30)
        elapsed = time.monotonic() - t0

        # a frame above the message limit: libzmq drops that connection instead of allocating the frame
        big = RawClient(server.endpoint, context)
        monitor = big.sock.get_monitor_socket(zmq.EVENT_DISCONNECTED)
        big.send_raw([msgpack.packb(big.header("ping")), b"\0" * (64 * 2**20 + 512 * 1024)])
        assert monitor.poll(10000), "the server did not drop the connection of an oversized frame"
        big.sock.disable_monitor()
        monitor.close(linger=0)
        big.close()
        rss.append(rss_bytes(server.pid))

        sent = sum(f.sent for f in fuzzers)
        mib = [round(r / 2**20) for r in rss]
        print(
            f"\nfuzz: {sent} malformed messages from {n_fuzzers} clients x 2 rounds in {elapsed:.1f} s; "
            f"{good_chunks[0]} good chunks meanwhile; server RSS MiB start/round 1/round 2/oversized frame: {mib}"
        )
        codes: dict[str, int] = {}
        for f in fuzzers:
            for k, v in f.codes.items():
                codes[k] = codes.get(k, 0) + v
        print("reply codes:", dict(sorted(codes.items())))

        assert sent >= n_per_fuzzer * n_fuzzers
        for f in fuzzers:
            assert f.replies == f.sent, "every malformed message gets exactly one reply"
            assert not f.expected, "every attributable message is answered with its own re"
            assert f.unattributed_got + f.other_replies == f.unattributed_expected + f.mutated
            assert f.unattributed_got >= f.unattributed_expected
            assert not f.mismatches, f.mismatches[:5]
        for code in ("bad_header", "version", "unknown_type", "bad_array", "too_large", "no_session", "bad_context"):
            assert codes.get(code, 0) > 0, code
        assert not good_results, good_results[:5]
        assert good_chunks[0] >= 20
        assert server.alive()
        assert (
            good.ping() < 1.0
            and good.request_chunk(observation(good.welcome.raw["observation"]), step=10**6).start_step == 10**6
        )
        assert rss[2] - rss[1] < rss_slack_mb * 2**20, f"server memory grew again in round 2: {mib}"
        assert rss[3] - rss[2] < rss_slack_mb * 2**20, f"the oversized frame was allocated: {mib}"
        assert rss[1] - rss[0] < 512 * 2**20, f"server memory: {mib}"
    finally:
        good.close()
        context.destroy(linger=0)
        server.kill()


def test_fuzz_10k_malformed_messages_from_4_clients():
    run_fuzz(n_per_fuzzer=2600, n_fuzzers=4, rss_slack_mb=32)


@pytest.mark.slow
def test_fuzz_100k_malformed_messages_from_8_clients():
    run_fuzz(n_per_fuzzer=12500, n_fuzzers=8, rss_slack_mb=32)
