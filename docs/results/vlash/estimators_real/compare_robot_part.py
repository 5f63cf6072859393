"""How far the robot-realistic estimators are from the whole-scene oracle, slice by slice.

    python docs/results/vlash/estimators_real/compare_robot_part.py [--task pick-place] [--seeds 5000-5005] [--latency 4]

Runs vlash episodes conditioned on the oracle ``model`` estimate and, at every request, also computes the
``kinematic`` and arm-model ``model-robot`` estimates of the same pending actions; prints the mean, p90 and
max difference to the oracle of the end effector (m), the gripper opening, the joints (rad), and how far
the oracle moves the first object (m) that both of them leave where it was measured.
"""

from __future__ import annotations

import argparse

import numpy as np

from policy_steer.envs import make
from policy_steer.policies.loading import load_policy
from policy_steer.runtime import future_state as fs
from policy_steer.runtime.sim_loop import RuntimeConfig, run_episode
from policy_steer.steered_policy import SteeredPolicy


class Probe(fs.FutureStateEstimator):
    """The oracle's estimate, with the others' differences to it recorded."""

    name = "model"

    def __init__(self, rows: list[list[float]]) -> None:
        self.rows = rows

    def check(self, robot) -> None:
        self.oracle, self.kin, self.roll = fs.ModelEstimator(), fs.KinematicEstimator(), fs.ArmRolloutEstimator()
        self.kin.check(robot)
        self.roll.check(robot)

    def estimate(self, state, pending, robot):
        m = self.oracle.estimate(state, pending, robot)
        if len(pending):
            lay, rsd = robot.state_layout, robot.robot_state_dim
            for est in (self.kin, self.roll):
                e = est.estimate(state, pending, robot)
                self.rows.append([
                    float(np.linalg.norm(e[lay["ee_pos"]] - m[lay["ee_pos"]])),
                    float(np.abs(e[lay["gripper"]] - m[lay["gripper"]]).max()) if "gripper" in lay else 0.0,
                    float(np.abs(e[lay["joint_pos"]] - m[lay["joint_pos"]]).max()),
                    float(np.linalg.norm(m[rsd:rsd + 3] - state[rsd:rsd + 3])),
                ])
        return m


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--task", default="pick-place")
    ap.add_argument("--seeds", default="5000-5005")
    ap.add_argument("--latency", default="4")
    args = ap.parse_args()
    lo, hi = (int(v) for v in args.seeds.split("-"))
    rows: list[list[float]] = []
    fs.ESTIMATORS["model"] = lambda robot: Probe(rows)  # this process only: the oracle, probed
    env = make(args.task, "nominal")
    policy = SteeredPolicy(load_policy(f"checkpoints/{args.task}-diffusion"))
    for seed in range(lo, hi + 1):
        r = run_episode(env, policy, RuntimeConfig(mode="vlash", latency=args.latency, estimator="model"), seed)
        print(f"seed {seed}: success {r.success}")
    a = np.array(rows)
    print(f"{len(a)} estimates (kinematic and model-robot) against the oracle")
    for i, name in enumerate(["ee (m)", "gripper opening", "joints (rad)", "oracle's object move (m)"]):
        print(f"{name:26s} mean {a[:, i].mean():.4f}  p90 {np.percentile(a[:, i], 90):.4f}  max {a[:, i].max():.4f}")


if __name__ == "__main__":
    main()
