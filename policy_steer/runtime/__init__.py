"""The control loop that turns chunks into actions at the control rate (modes sync, async, vlash).

- :mod:`~policy_steer.runtime.loop`: the one control loop (:class:`~policy_steer.runtime.loop.ControlLoop`)
  over a clock: :class:`~policy_steer.runtime.loop.VirtualClock` (simulation: an inference of d steps
  lets the robot run d steps; simulated time pauses while a slow source computes) or
  :class:`~policy_steer.runtime.loop.WallClock` (robots); its records and figures;
- :mod:`~policy_steer.runtime.robot`: the Robot contract, and :class:`~policy_steer.runtime.robot.SimRobot`
  (a task env as a robot);
- :mod:`~policy_steer.runtime.chunk_source`: the ChunkSource contract: the steered policy in process
  (on a worker thread, or inline for the virtual clock) or a policy server's client;
- :mod:`~policy_steer.runtime.planner`: the modes: when to ask, what to condition on, where a chunk goes;
- :mod:`~policy_steer.runtime.action_queue`: actions keyed by control index (never stale, never past a chunk);
- :mod:`~policy_steer.runtime.future_state`: the VLASH future-state estimators (kinematic, model-robot,
  model, delta, target; ``auto`` by the robot's description);
- :mod:`~policy_steer.runtime.arm_model`: an arm's own model from its description (FK, the controller's IK,
  a rollout of the arm alone) and model mismatch for the benchmark;
- :mod:`~policy_steer.runtime.latency`: inference delay in control steps (fixed, sampled, replayed, measured);
- :mod:`~policy_steer.runtime.quantization`: VLASH's action quantization, a separate option;
- :mod:`~policy_steer.runtime.sim_loop`: a simulation benchmark episode (the loop on the virtual clock,
  plus the moving-goal reaction figure);
- :mod:`~policy_steer.runtime.realtime`: the loop on the wall clock under the robot processes' names.
"""
