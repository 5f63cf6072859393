"""lerobot 0.6.1's async-inference transport, driven as lerobot's own client drives it, around a fixed chunk.

Server: lerobot's real ``PolicyServer`` gRPC service (``lerobot.async_inference.policy_server``), whose
``_predict_action_chunk`` is replaced by one that returns a fixed chunk as lerobot's ``TimedAction``
list, so that only transport is timed: gRPC, ``pickle`` both ways, the server's observation queue.
Its per-request INFO logging (its own logger and the root logger that ``receive_bytes_in_chunks``
writes to) is turned down to WARNING, because logging is not transport, and its
``inference_latency`` pacing sleep is 0.

Client: what ``RobotClient`` does: ``pickle.dumps(TimedObservation(...))`` streamed with
``send_bytes_in_chunks`` over ``SendObservations``, while a receiver thread keeps a ``GetActions``
call outstanding and ``pickle.loads`` the answer. ``must_go=True`` so every observation is processed
(lerobot would otherwise skip observations "similar" to the last one).

Run the server: ``python benchmarks/transport/lerobot_baseline.py --port 50051 --horizon 16 --action_dim 7``
(it prints ``ready`` when listening).
"""

from __future__ import annotations

import argparse
import logging
import os
import pickle  # nosec: this is the baseline being measured, talking to itself on loopback
import queue
import sys
import tempfile
import threading
import time
from concurrent import futures
from typing import Any


def serve(port: int, horizon: int, action_dim: int) -> None:
    os.chdir(tempfile.mkdtemp(prefix="lerobot_server_"))  # lerobot's logger writes logs/ into the cwd
    import grpc
    import torch
    from lerobot.async_inference.configs import PolicyServerConfig
    from lerobot.async_inference.helpers import TimedAction, TimedObservation
    from lerobot.async_inference.policy_server import PolicyServer
    from lerobot.transport import services_pb2_grpc

    fixed = (
        torch.arange(horizon, dtype=torch.float32)[:, None]
        + torch.arange(action_dim, dtype=torch.float32)[None, :] / 100
    )

    class FixedChunkPolicyServer(PolicyServer):
        """lerobot's PolicyServer; the model step returns a fixed chunk (the rest is lerobot's code)."""

        def _predict_action_chunk(self, observation_t: TimedObservation) -> list[TimedAction]:
            self.last_processed_obs = observation_t
            return self._time_action_chunk(observation_t.get_timestamp(), list(fixed), observation_t.get_timestep())

    cfg = PolicyServerConfig(host="127.0.0.1", port=port, fps=30, inference_latency=0.0, obs_queue_timeout=2.0)
    policy_server = FixedChunkPolicyServer(cfg)
    # lerobot logs every request at INFO (its logger and, in receive_bytes_in_chunks, the root logger)
    logging.getLogger("policy_server").setLevel(logging.WARNING)
    logging.getLogger().setLevel(logging.WARNING)
    # as lerobot.async_inference.policy_server.serve does
    server = grpc.server(futures.ThreadPoolExecutor(max_workers=4))
    services_pb2_grpc.add_AsyncInferenceServicer_to_server(policy_server, server)
    server.add_insecure_port(f"{cfg.host}:{cfg.port}")
    server.start()
    print("ready", flush=True)
    server.wait_for_termination()


class LerobotPathClient:
    """The client half of lerobot's transport.

    ``pattern="receiver"`` is what ``RobotClient`` does: a receiver thread keeps a ``GetActions`` call
    outstanding while the control loop streams observations. ``pattern="sequential"`` calls
    ``SendObservations`` then ``GetActions`` in the caller's thread (one hop fewer; sometimes faster).
    One client per server: lerobot's server has a single observation slot shared by all callers.
    """

    def __init__(self, address: str, pattern: str = "receiver") -> None:
        import grpc
        from lerobot.transport import services_pb2, services_pb2_grpc
        from lerobot.transport.utils import grpc_channel_options

        if pattern not in ("receiver", "sequential"):
            raise ValueError(pattern)
        self.pattern = pattern
        self._pb2 = services_pb2
        self.channel = grpc.insecure_channel(address, grpc_channel_options(initial_backoff=f"{1 / 30:.4f}s"))
        self.stub = services_pb2_grpc.AsyncInferenceStub(self.channel)
        self.stub.Ready(services_pb2.Empty())  # lerobot resets its server state for the new client here
        self._chunks: queue.Queue = queue.Queue()
        self._running = True
        if pattern == "receiver":
            self._receiver = threading.Thread(target=self._receive, daemon=True)
            self._receiver.start()

    def _get_actions(self) -> list | None:
        chunk = self.stub.GetActions(self._pb2.Empty())
        if len(chunk.data) == 0:
            return None  # lerobot's "no observation within obs_queue_timeout"
        return pickle.loads(chunk.data)  # nosec

    def _receive(self) -> None:
        """RobotClient.receive_actions: keep a GetActions call outstanding, unpickle what comes."""
        while self._running:
            try:
                actions = self._get_actions()
            except Exception:
                if self._running:
                    time.sleep(0.01)
                continue
            if actions is not None:
                self._chunks.put(actions)

    def round_trip(self, observation: dict[str, Any], step: int, timeout_s: float = 10.0) -> list:
        from lerobot.async_inference.helpers import TimedObservation
        from lerobot.transport.utils import send_bytes_in_chunks

        obs = TimedObservation(timestamp=time.time(), timestep=step, observation=observation, must_go=True)
        data = pickle.dumps(obs)  # nosec: RobotClient.send_observation
        self.stub.SendObservations(send_bytes_in_chunks(data, self._pb2.Observation, log_prefix="", silent=True))
        actions = self._chunks.get(timeout=timeout_s) if self.pattern == "receiver" else self._get_actions()
        if actions is None or actions[0].get_timestep() != step:
            raise RuntimeError(f"lerobot path returned no chunk or another step's chunk for step {step}")
        return actions

    def close(self) -> None:
        self._running = False
        self.channel.close()


if __name__ == "__main__":
    parser = argparse.ArgumentParser()
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--horizon", type=int, default=16)
    parser.add_argument("--action_dim", type=int, default=7)
    args = parser.parse_args()
    logging.basicConfig(level=logging.WARNING)
    serve(args.port, args.horizon, args.action_dim)
    sys.exit(0)
