"""observe -> chunk round trips: policy-steer's ZeroMQ transport vs lerobot's gRPC + pickle path.

Both servers return a fixed chunk (float32 [16, 7]), so only transport is timed, over loopback TCP,
each server in its own process. Payloads: a state-only observation (32 floats), one 224x224x3 image
(+ state), two 480x640x3 images (+ state). Per payload and path:

- latency: ``--n`` round trips from one client, in blocks that alternate between the two paths so
  both see the same machine load (this machine is shared); p50 and p99;
- rate: the number of round trips per second one closed-loop client sustains for ``--rate_s``
  seconds, and (policy-steer only) four clients in four processes on one server. lerobot's
  PolicyServer serves one robot: a second client's observation replaces the first one's in its
  single-slot queue and ``GetActions`` hands the chunk to whichever client asks, so it has no
  four-client figure.

Writes ``results.json``, ``results.md`` and ``results.png`` under ``--out`` and prints the table:

    HF_HUB_OFFLINE=1 .venv/bin/python benchmarks/transport/bench_transport.py --out benchmarks/transport/results
"""

from __future__ import annotations

import argparse
import json
import multiprocessing as mp
import os
import platform
import socket
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent
REPO = HERE.parents[1]
sys.path.insert(0, str(HERE))

STATE_DIM, HORIZON, ACTION_DIM = 32, 16, 7
PAYLOADS: dict[str, dict[str, tuple[int, int]]] = {
    "state only (32 floats)": {},
    "one 224x224x3 image": {"front": (224, 224)},
    "two 480x640x3 images": {"left": (480, 640), "right": (480, 640)},
}
TARGET_P50_MS_224 = 1.0
TARGET_RATIO = 2.0


def make_obs(cameras: dict[str, tuple[int, int]], seed: int = 0) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(seed)
    obs = {"observation.state": rng.standard_normal(STATE_DIM).astype(np.float32)}
    for cam, (h, w) in cameras.items():
        obs[f"observation.images.{cam}"] = rng.integers(0, 256, (h, w, 3), dtype=np.uint8)
    return obs


def start_ours(cameras: dict[str, tuple[int, int]]) -> tuple[subprocess.Popen, str]:
    cams = ",".join(f"{k}:{h}x{w}" for k, (h, w) in cameras.items())
    args = [
        sys.executable,
        "-m",
        "policy_steer.transport.fixed_policy",
        "--bind",
        "tcp://127.0.0.1:*",
        "--state_dim",
        str(STATE_DIM),
        "--horizon",
        str(HORIZON),
        "--action_dim",
        str(ACTION_DIM),
    ]
    if cams:
        args += ["--cameras", cams]
    proc = subprocess.Popen(args, cwd=REPO, stdout=subprocess.PIPE, text=True)
    line = proc.stdout.readline()
    if not line.startswith("ready"):
        raise RuntimeError(f"policy-steer fixed server did not start: {line!r}")
    return proc, line.split()[1]


def start_lerobot() -> tuple[subprocess.Popen, str]:
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()
    proc = subprocess.Popen(
        [
            sys.executable,
            str(HERE / "lerobot_baseline.py"),
            "--port",
            str(port),
            "--horizon",
            str(HORIZON),
            "--action_dim",
            str(ACTION_DIM),
        ],
        cwd=REPO,
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
        text=True,
    )
    line = proc.stdout.readline()
    if "ready" not in line:
        raise RuntimeError("lerobot baseline server did not start")
    return proc, f"127.0.0.1:{port}"


def ours_client(endpoint: str):
    from policy_steer.transport import PolicyClient

    c = PolicyClient(endpoint=endpoint, timeout_s=10.0, name="bench")
    c.connect()
    return c


LEROBOT_PATTERNS = {"lerobot": "receiver", "lerobot (sequential)": "sequential"}


class Path_:
    """One transport path: ``trip(obs, step)`` does one round trip and checks the answer."""

    def __init__(self, name: str, endpoint: str, cameras: dict) -> None:
        self.name = name
        self.cameras = cameras
        if name == "policy-steer":
            self.client = ours_client(endpoint)
            self.trip = lambda obs, step: self._check(self.client.request_chunk(obs, step=step).start_step, step)
        else:
            from lerobot_baseline import LerobotPathClient

            self.client = LerobotPathClient(endpoint, LEROBOT_PATTERNS[name])
            lerobot_obs = lambda obs: {**obs, "task": ""}  # noqa: E731
            self.trip = lambda obs, step: self.client.round_trip(lerobot_obs(obs), step)

    @staticmethod
    def _check(got: int, want: int) -> None:
        if got != want:
            raise RuntimeError(f"chunk for step {got}, wanted {want}")

    def close(self) -> None:
        self.client.close()


def latency_blocks(paths: list[Path_], obs: dict, n: int, block: int, warmup: int) -> dict[str, list[float]]:
    times: dict[str, list[float]] = {p.name: [] for p in paths}
    step = 0
    for p in paths:
        for _ in range(warmup):
            p.trip(obs, step)
            step += 1
    for _ in range(max(1, n // block)):
        for p in paths:
            for _ in range(block):
                t0 = time.perf_counter()
                p.trip(obs, step)
                times[p.name].append(time.perf_counter() - t0)
                step += 1
    return times


def closed_loop_rate(trip, obs: dict, seconds: float, step0: int = 0) -> tuple[int, float]:
    n, step = 0, step0
    t0 = time.perf_counter()
    while time.perf_counter() - t0 < seconds:
        trip(obs, step)
        n += 1
        step += 1
    return n, time.perf_counter() - t0


def _rate_worker(endpoint: str, cameras: dict, seconds: float, barrier, results) -> None:
    client = ours_client(endpoint)
    obs = make_obs(cameras, seed=os.getpid())
    barrier.wait()
    n, dt = closed_loop_rate(lambda o, s: client.request_chunk(o, step=s), obs, seconds)
    results.put((n, dt))
    client.close()


def four_client_rate(endpoint: str, cameras: dict, seconds: float, n_clients: int = 4) -> float:
    ctx = mp.get_context("spawn")
    barrier, results = ctx.Barrier(n_clients), ctx.Queue()
    procs = [
        ctx.Process(target=_rate_worker, args=(endpoint, cameras, seconds, barrier, results)) for _ in range(n_clients)
    ]
    for p in procs:
        p.start()
    out = [results.get(timeout=120 + seconds) for _ in procs]
    for p in procs:
        p.join(30)
    return sum(n for n, _ in out) / max(dt for _, dt in out)


def stats(ts: list[float]) -> dict[str, float]:
    a = np.asarray(ts) * 1e3
    return {
        "n": int(a.size),
        "p50_ms": float(np.percentile(a, 50)),
        "p99_ms": float(np.percentile(a, 99)),
        "mean_ms": float(a.mean()),
    }


def run(args: argparse.Namespace) -> dict:
    results: dict = {
        "command": "HF_HUB_OFFLINE=1 .venv/bin/python benchmarks/transport/bench_transport.py "
        + " ".join(sys.argv[1:]),
        "machine": {"cpus": os.cpu_count(), "python": platform.python_version(), "platform": platform.platform()},
        "settings": {
            "n": args.n,
            "block": args.block,
            "rate_s": args.rate_s,
            "chunk": [HORIZON, ACTION_DIM],
            "transport": "loopback TCP",
        },
        "payloads": {},
    }
    import grpc
    import zmq

    results["machine"].update({"pyzmq": zmq.__version__, "libzmq": zmq.zmq_version(), "grpcio": grpc.__version__})
    # one lerobot server per client pattern: its server has one observation slot for all callers
    lerobot = {name: start_lerobot() for name in LEROBOT_PATTERNS}
    try:
        for name, cameras in PAYLOADS.items():
            obs = make_obs(cameras)
            nbytes = sum(a.nbytes for a in obs.values())
            ours_proc, endpoint = start_ours(cameras)
            paths = [Path_("policy-steer", endpoint, cameras)] + [
                Path_(n, addr, cameras) for n, (_, addr) in lerobot.items()
            ]
            try:
                times = latency_blocks(paths, obs, args.n, args.block, args.warmup)
                entry: dict = {"payload_bytes": nbytes}
                for p in paths:
                    n, dt = closed_loop_rate(p.trip, obs, args.rate_s, step0=10**6)
                    entry[p.name] = {**stats(times[p.name]), "rate_1_client_hz": n / dt}
                entry["policy-steer"]["rate_4_clients_hz"] = four_client_rate(endpoint, cameras, args.rate_s)
                for n in LEROBOT_PATTERNS:
                    entry[n]["rate_4_clients_hz"] = None
                # the ratio is taken against lerobot's faster client pattern on this payload
                best = min(LEROBOT_PATTERNS, key=lambda n: entry[n]["p50_ms"])
                entry["lerobot_best"] = best
                entry["p50_ratio"] = entry[best]["p50_ms"] / entry["policy-steer"]["p50_ms"]
                fastest = max(entry[n]["rate_1_client_hz"] for n in LEROBOT_PATTERNS)
                entry["rate_1_ratio"] = entry["policy-steer"]["rate_1_client_hz"] / fastest
                results["payloads"][name] = entry
                print(
                    f"{name}: policy-steer p50 {entry['policy-steer']['p50_ms']:.3f} ms, {best} p50 {entry[best]['p50_ms']:.3f} ms, "
                    f"ratio {entry['p50_ratio']:.2f}x",
                    flush=True,
                )
            finally:
                for p in paths:
                    p.close()
                ours_proc.terminate()
                ours_proc.wait(10)
    finally:
        for proc, _ in lerobot.values():
            proc.kill()
            proc.wait(10)
    img = results["payloads"]["one 224x224x3 image"]["policy-steer"]["p50_ms"]
    results["targets"] = {
        "p50_224_image_le_1ms": {"value_ms": img, "pass": img <= TARGET_P50_MS_224},
        "p50_ratio_ge_2_every_payload": {
            "ratios": {k: v["p50_ratio"] for k, v in results["payloads"].items()},
            "pass": all(v["p50_ratio"] >= TARGET_RATIO for v in results["payloads"].values()),
        },
    }
    return results


def markdown(results: dict) -> str:
    lines = [
        "# Transport benchmark: observe -> chunk round trips (fixed-chunk servers, loopback TCP)",
        "",
        f"`{results['command']}`",
        "",
        f"Machine: {results['machine']['cpus']} CPUs, Python {results['machine']['python']}, pyzmq {results['machine']['pyzmq']} "
        f"(libzmq {results['machine']['libzmq']}), grpcio {results['machine']['grpcio']}. "
        f"{results['settings']['n']} round trips per path and payload, in alternating blocks of {results['settings']['block']}; "
        f"rates are closed-loop clients over {results['settings']['rate_s']} s. Chunk float32 {results['settings']['chunk']}.",
        "",
        "| payload | path | p50 ms | p99 ms | 1 client req/s | 4 clients req/s | p50 ratio (faster lerobot / ours) |",
        "|---|---|---:|---:|---:|---:|---:|",
    ]
    for name, e in results["payloads"].items():
        for path in ("policy-steer", *LEROBOT_PATTERNS):
            r = e[path]
            four = f"{r['rate_4_clients_hz']:.0f}" if r["rate_4_clients_hz"] else "n/a (one robot per server)"
            ratio = f"**{e['p50_ratio']:.2f}x**" if path == "policy-steer" else ""
            lines.append(
                f"| {name} ({e['payload_bytes'] / 1024:.0f} KiB) | {path} | {r['p50_ms']:.3f} | {r['p99_ms']:.3f} | "
                f"{r['rate_1_client_hz']:.0f} | {four} | {ratio} |"
            )
    t = results["targets"]
    lines += [
        "",
        f"- Target p50 <= 1 ms for one 224x224 image: {t['p50_224_image_le_1ms']['value_ms']:.3f} ms, "
        f"{'met' if t['p50_224_image_le_1ms']['pass'] else 'NOT met'}.",
        "- Target >= 2x lower p50 than lerobot on every payload: "
        + ", ".join(f"{k}: {v:.2f}x" for k, v in t["p50_ratio_ge_2_every_payload"]["ratios"].items())
        + f" ({'met' if t['p50_ratio_ge_2_every_payload']['pass'] else 'NOT met'}).",
        "",
        "lerobot path: its real gRPC `PolicyServer` service with `pickle` payloads, the model step replaced by a fixed",
        "chunk, per-request INFO logging off, `inference_latency` 0. `lerobot`: the client streams `SendObservations` while",
        "a receiver thread keeps `GetActions` outstanding, as `RobotClient` does; `lerobot (sequential)`: `SendObservations`",
        "then `GetActions` in one thread. The ratio uses the faster of the two on each payload. See `lerobot_baseline.py`.",
        "4 clients: four client processes on one server (this machine has 2 cores for the server and all clients).",
    ]
    return "\n".join(lines) + "\n"


def plot(results: dict, png: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    names = list(results["payloads"])
    x = np.arange(len(names))
    fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(12, 4.5))
    for i, (which, color) in enumerate((("policy-steer", "tab:blue"), ("lerobot_best", "tab:orange"))):
        entries = [
            results["payloads"][n][results["payloads"][n][which] if which == "lerobot_best" else which] for n in names
        ]
        label = "lerobot (faster client pattern)" if which == "lerobot_best" else which
        p50 = [e["p50_ms"] for e in entries]
        p99 = [e["p99_ms"] for e in entries]
        ax1.bar(x + (i - 0.5) * 0.38, p50, 0.38, color=color, label=f"{label} p50")
        ax1.errorbar(
            x + (i - 0.5) * 0.38,
            p50,
            yerr=[np.zeros(len(p50)), np.subtract(p99, p50)],
            fmt="none",
            ecolor="k",
            capsize=3,
        )
        r1 = [e["rate_1_client_hz"] for e in entries]
        ax2.bar(x + (i - 1) * 0.27, r1, 0.27, color=color, label=f"{label}, 1 client")
    r4 = [results["payloads"][n]["policy-steer"]["rate_4_clients_hz"] for n in names]
    ax2.bar(x + 0.27, r4, 0.27, color="tab:green", label="policy-steer, 4 clients")
    for ax in (ax1, ax2):
        ax.set_xticks(x, [n.replace(" (", "\n(") for n in names], fontsize=8)
        ax.set_yscale("log")
        ax.legend(fontsize=8, loc="upper right")
    ax1.set_ylabel("round trip, ms (bar p50, whisker p99)")
    ax1.axhline(1.0, color="gray", ls="--", lw=0.8)
    ax2.set_ylabel("sustained round trips per second")
    ax2.set_ylim(top=max(max(r4), max(results["payloads"][n]["policy-steer"]["rate_1_client_hz"] for n in names)) * 3)
    top = max(results["payloads"][n][results["payloads"][n]["lerobot_best"]]["p99_ms"] for n in names)
    ax1.set_ylim(top=top * 4)
    for i, n in enumerate(names):
        ours = results["payloads"][n]["policy-steer"]
        ax1.text(
            i - 0.19,
            ours["p99_ms"] * 1.2,
            f"{results['payloads'][n]['p50_ratio']:.1f}x\nlower",
            ha="center",
            fontsize=8,
        )
    fig.suptitle("observe -> chunk over loopback TCP: policy-steer (ZeroMQ) vs lerobot async inference (gRPC + pickle)")
    fig.tight_layout()
    fig.savefig(png, dpi=120)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--out", default=str(HERE / "results"))
    parser.add_argument("--n", type=int, default=1000, help="timed round trips per path and payload")
    parser.add_argument("--block", type=int, default=100, help="round trips per block (paths alternate by block)")
    parser.add_argument("--warmup", type=int, default=50)
    parser.add_argument("--rate_s", type=float, default=3.0, help="seconds per rate measurement")
    args = parser.parse_args()
    results = run(args)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    (out / "results.json").write_text(json.dumps(results, indent=2) + "\n")
    md = markdown(results)
    (out / "results.md").write_text(md)
    plot(results, out / "results.png")
    print(md)
    print(f"wrote {out}/results.json, results.md, results.png")
    return (
        0
        if results["targets"]["p50_224_image_le_1ms"]["pass"]
        and results["targets"]["p50_ratio_ge_2_every_payload"]["pass"]
        else 1
    )


if __name__ == "__main__":
    sys.exit(main())
