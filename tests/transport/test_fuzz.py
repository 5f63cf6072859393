"""Fuzzing the server: malformed messages from several clients while a well-formed client keeps working.

Every malformed message must get exactly one reply (an ``error`` with the right code where the
category fixes it, and ``re`` wherever the header's ``seq`` was readable), the well-formed client must
keep getting correct chunks, and the server process must stay up with memory that plateaus: ten
identical rounds, the resident memory after each printed, and the last rounds may not rise above the
first ones (a leak grows every round; the allocator's caches for messages in flight fill once).

With ``-s`` it prints the figures: messages and kinds sent, reply codes, chunks served to the honest
client meanwhile, that client's round trip p50/p99 against a quiet baseline measured first, and the
server's RSS per round.
"""

from __future__ import annotations

import math
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
KINDS = [
    "random_bytes",
    "random_frames",
    "version",
    "unknown_type",
    "frame_count",
    "bad_dtype",
    "bad_shape",
    "huge_declared",
    "zero_size_huge_dim",  # [2**63-1, 0]: bad_array with re, never internal
    "long_string",
    "long_header_string",  # beyond msgpack's own bound: too_large, with re
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
    "prefix_fields",  # prefix_start without a prefix: bad_header
    "over_limit",  # configure a cost above the server's limit (inf included): over_limit
    "bad_count",  # configure a cost that is not a count: bad_header
    "verifier_path",  # a path outside the allowed roots: steer_unavailable, one text for all
]
# The server the fuzz runs against: the transport tests' fixed-chunk server with its default limits
# (candidates 64, particles 32, num_steps 100) and no verifier root.
LIMITS = {"candidates": 64, "particles": 32, "num_steps": 100}


class Fuzzer:
    """One DEALER sending malformed messages of many kinds; checks the reply to each one."""

    def __init__(self, endpoint: str, seed: int, n: int, context: zmq.Context) -> None:
        self.raw = RawClient(endpoint, context)
        self.rng = np.random.default_rng(seed)
        self.n = n  # messages per round
        self.sent = 0
        self.replies = 0
        self.expected: dict[int, tuple[str, set[str]]] = {}  # seq -> (category, acceptable reply codes)
        self.unattributed_expected = 0
        self.unattributed_got = 0
        self.either = 0  # messages whose seq may or may not be readable (damaged headers)
        self.other_replies = 0  # replies to those (whose seq may have been damaged too)
        self.mismatches: list[str] = []
        self.codes: dict[str, int] = {}
        self.kinds: dict[str, int] = {}
        self.internal: list[str] = []
        self.path_texts: set[str] = set()
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

    def _configure(self, steer: dict) -> dict:
        return self._h("configure", session=self.session, steer=steer)

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
        if r.random() < 0.005:  # a 300 KiB header: above the header limit, its seq still read
            h = self._h("ping", pad=["x" * 4000] * 75)
            return "big_header", [msgpack.packb(h)], h["seq"], {"too_large"}
        kind = str(r.choice(KINDS))
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
        if kind == "zero_size_huge_dim":
            shape = [[2**63 - 1, 0], [0, 2**63 - 1], [2**40, 2**30, 0], [2**27, 0]][int(r.integers(4))]
            specs = [
                {"name": "observation.state", "dtype": "<f4", "shape": shape},
                {"name": "observation.images.front", "dtype": "|u1", "shape": [8, 8, 3]},
            ]
            h = self._observe_header(arrays=specs)
            return kind, [msgpack.packb(h), b"", b"\0" * 192], h["seq"], {"bad_array"}
        if kind == "long_string":
            h = self._observe_header(task="t" * int(r.integers(4097, 6000)))
            return kind, [msgpack.packb(h)], h["seq"], {"too_large"}
        if kind == "long_header_string":
            h = self._observe_header(task="t" * int(r.integers(20000, 60000)))
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
        if kind == "truncated":  # the seq is read when it comes before the cut: either way, one reply
            h = msgpack.packb(self._observe_header())
            return kind, [h[: int(r.integers(1, len(h)))]], -1, {"bad_header"}
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
        if kind == "prefix_fields":
            specs, bufs = self._good_arrays()
            h = self._observe_header(arrays=specs, **{str(r.choice(["prefix_start", "prefix_committed"])): 0})
            return kind, [msgpack.packb(h), *bufs], h["seq"], {"bad_header"}
        if kind == "over_limit":
            key = str(r.choice(list(LIMITS)))
            value = [math.inf, LIMITS[key] + 1, 10**9, 1e300, 2**63 - 1][int(r.integers(5))]
            h = self._configure({key: value})
            return kind, [msgpack.packb(h)], h["seq"], {"over_limit"}
        if kind == "bad_count":
            value = ["many", -3, 0, True, 2.5, math.nan, [4], {"n": 4}, "-1"][int(r.integers(9))]
            h = self._configure({str(r.choice(list(LIMITS))): value})
            return kind, [msgpack.packb(h)], h["seq"], {"bad_header"}
        if kind == "verifier_path":
            path = ["/etc", "/etc/passwd", "/nonexistent/v", "../../../etc/shadow", "", "/tmp", 7][int(r.integers(7))]
            h = self._configure({"method": "taco", "verifier_path": path})
            return kind, [msgpack.packb(h)], h["seq"], {"steer_unavailable"}
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
        if code == "internal":
            self.internal.append(str(h.get("message"))[:200])
        re = h.get("re")
        if re is None:
            self.unattributed_got += 1
            return
        if re in self.expected:
            kind, ok = self.expected.pop(re)
            if ok and code not in ok:
                self.mismatches.append(f"{kind}: got {code} ({h.get('message')}), expected {sorted(ok)}")
            if kind == "verifier_path":
                self.path_texts.add(h.get("message"))
        else:
            self.other_replies += 1

    def run(self, seed: int | None = None, window: int = 100) -> None:
        """One round of ``n`` messages (with a fresh random stream when ``seed`` is given)."""
        if seed is not None:
            self.rng = np.random.default_rng(seed)
        outstanding = 0
        for _ in range(self.n):
            kind, frames, seq, ok = self.make()
            self.raw.send_raw(frames)
            self.sent += 1
            self.kinds[kind] = self.kinds.get(kind, 0) + 1
            outstanding += 1
            if seq is None:
                self.unattributed_expected += 1
            elif seq == -1:
                self.either += 1
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


def percentiles(values: list[float]) -> str:
    a = np.asarray(values) * 1e3
    return f"p50 {np.percentile(a, 50):.1f} ms, p99 {np.percentile(a, 99):.1f} ms (n={a.size})"


def plateau_violation(rss: list[int], slack: int) -> str | None:
    """Why ``rss`` (after each round) does not plateau, or None.

    A leak adds about the same every round; the allocator's caches for messages in flight grow while
    the peak number in flight rises (on a loaded machine the server falls behind and more wait) and
    then stay. So: the second half of the rounds may not rise above the first half's peak by more than
    ``slack``, nor keep rising within itself by more than ``slack`` (which a steady leak of
    ``slack / rounds`` per round already does)."""
    half = len(rss) // 2
    first, second = rss[:half], rss[half:]
    if max(second) - max(first) > slack:
        return f"the last {len(second)} rounds rose {(max(second) - max(first)) / 2**20:.0f} MiB above the first ones"
    if second[-1] - min(second) > slack:
        return f"memory kept rising in the last rounds by {(second[-1] - min(second)) / 2**20:.0f} MiB"
    return None


def run_fuzz(n_messages: int, n_fuzzers: int, rounds: int = 10, rss_slack_mb: float = 32) -> None:
    server = ServerProcess(FIXED_ARGS)
    context = zmq.Context()
    good = PolicyClient(endpoint=server.endpoint, timeout_s=5.0)
    try:
        good.connect()
        good_results: list[str] = []
        good_chunks = [0]
        good_times: list[float] = []
        stop = threading.Event()

        def request(step: int) -> float:
            obs = observation(good.welcome.raw["observation"], seed=step)
            t0 = time.perf_counter()
            chunk = good.request_chunk(obs, step=step, start_step=step + 1)
            elapsed = time.perf_counter() - t0
            if chunk.start_step != step + 1 or not np.array_equal(chunk.actions, EXPECTED_ACTIONS):
                good_results.append(f"step {step}: wrong chunk")
            elif chunk.info["echo"]["sums"]["observation.state"] != pytest.approx(
                float(obs["observation.state"].astype(np.float64).sum()), rel=1e-5, abs=1e-5
            ):
                good_results.append(f"step {step}: the server saw other data")
            return elapsed

        quiet = [request(step) for step in range(100)]  # the honest client alone: the baseline

        def well_formed() -> None:
            step = 1000
            while not stop.is_set():
                try:
                    good_times.append(request(step))
                    good_chunks[0] += 1
                except Exception as e:  # collected and asserted below
                    good_results.append(f"step {step}: {type(e).__name__}: {e}")
                step += 1

        # Identical rounds. Memory may rise in the first ones (buffers of messages in flight, which the
        # allocator keeps for reuse); it must not keep rising: bounded, not leaking.
        rss = [rss_bytes(server.pid)]
        good_thread = threading.Thread(target=well_formed)
        t0 = time.monotonic()
        good_thread.start()
        per_fuzzer = max(1, n_messages // (rounds * n_fuzzers))
        fuzzers = [Fuzzer(server.endpoint, seed=i, n=per_fuzzer, context=context) for i in range(n_fuzzers)]
        for round_ in range(rounds):
            threads = [threading.Thread(target=f.run, args=(100 * round_ + i,)) for i, f in enumerate(fuzzers)]
            for t in threads:
                t.start()
            for t in threads:
                t.join(300)
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
        after_big = rss_bytes(server.pid)

        sent = sum(f.sent for f in fuzzers)
        mib = [round(r / 2**20) for r in rss]
        kinds: dict[str, int] = {}
        codes: dict[str, int] = {}
        for f in fuzzers:
            for k, v in f.kinds.items():
                kinds[k] = kinds.get(k, 0) + v
            for k, v in f.codes.items():
                codes[k] = codes.get(k, 0) + v
        print(
            f"\nfuzz: {sent} malformed messages of {len(kinds)} kinds from {n_fuzzers} clients x {rounds} rounds "
            f"in {elapsed:.1f} s; {good_chunks[0]} chunks served to the honest client meanwhile"
        )
        print(f"honest client round trip: quiet {percentiles(quiet)}; under fuzz {percentiles(good_times or [math.nan])}")
        print(f"server RSS MiB: start {mib[0]}, after each round {mib[1:]}, after the oversized frame {round(after_big / 2**20)}")
        print("kinds:", dict(sorted(kinds.items())))
        print("reply codes:", dict(sorted(codes.items())))

        assert sent >= n_messages * 0.99
        assert set(KINDS) <= set(kinds), sorted(set(KINDS) - set(kinds))
        for f in fuzzers:
            assert f.replies == f.sent, "every malformed message gets exactly one reply"
            assert not f.expected, "every attributable message is answered with its own re"
            assert f.unattributed_got + f.other_replies == f.unattributed_expected + f.either
            assert f.unattributed_got >= f.unattributed_expected
            assert not f.mismatches, f.mismatches[:5]
            assert not f.internal, f"bad input answered internal: {f.internal[:3]}"
        for code in ("bad_header", "version", "unknown_type", "bad_array", "too_large", "no_session", "bad_context",
                     "over_limit", "steer_unavailable"):
            assert codes.get(code, 0) > 0, code
        texts = set().union(*(f.path_texts for f in fuzzers))
        assert len(texts) == 1, f"a refused verifier_path must read the same whatever the path: {texts}"
        assert not good_results, good_results[:5]
        assert good_chunks[0] >= 20
        assert server.alive()
        assert (
            good.ping() < 1.0
            and good.request_chunk(observation(good.welcome.raw["observation"]), step=10**6).start_step == 10**6
        )
        slack = rss_slack_mb * 2**20
        why = plateau_violation(rss[1:], slack)
        assert why is None, f"server memory does not plateau: {why}: {mib}"
        assert after_big - rss[-1] < slack, f"the oversized frame was allocated: {mib}, then {after_big / 2**20:.0f}"
        assert rss[1] - rss[0] < 512 * 2**20, f"server memory: {mib}"
    finally:
        good.close()
        context.destroy(linger=0)
        server.kill()


def test_plateau_rule():
    mib = 2**20
    flat = [60 * mib, 100 * mib, 104 * mib, 101 * mib, 106 * mib, 105 * mib, 104 * mib, 106 * mib, 103 * mib, 105 * mib]
    assert plateau_violation(flat, 32 * mib) is None
    leak = [60 * mib + i * 8 * mib for i in range(10)]  # 8 MiB a round
    assert "rose" in plateau_violation(leak, 32 * mib)
    late = flat[:5] + [110 * mib, 120 * mib, 130 * mib, 140 * mib, 150 * mib]
    assert plateau_violation(late, 32 * mib) is not None


def test_fuzz_10k_malformed_messages_from_4_clients():
    run_fuzz(n_messages=10400, n_fuzzers=4, rounds=10)


@pytest.mark.slow
def test_fuzz_100k_malformed_messages_from_8_clients():
    run_fuzz(n_messages=100000, n_fuzzers=8, rounds=10)
