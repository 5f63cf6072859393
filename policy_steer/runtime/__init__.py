"""Control loops that turn chunks into actions at the control rate (modes sync, async, vlash).

- :mod:`~policy_steer.runtime.planner`: the modes: when to ask, what to condition on, where a chunk goes;
- :mod:`~policy_steer.runtime.action_queue`: actions keyed by control index (never stale, never past a chunk);
- :mod:`~policy_steer.runtime.future_state`: the VLASH future-state estimators (target, delta, model);
- :mod:`~policy_steer.runtime.latency`: inference delay in control steps (fixed, sampled, replayed, measured);
- :mod:`~policy_steer.runtime.quantization`: VLASH's action quantization, a separate option;
- :mod:`~policy_steer.runtime.sim_loop`: the loop on a virtual clock (simulation benchmarks);
- :mod:`~policy_steer.runtime.realtime`: the loop on the wall clock (robots), with
  :mod:`~policy_steer.runtime.chunk_source` (inference off the control thread: local or over ZeroMQ) and
  :mod:`~policy_steer.runtime.robot` (the robot side).
"""
