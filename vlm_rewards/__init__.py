"""Scene -> VLM -> reward program -> differentiable torch reward (VLS, made safe and typed).

- :class:`RewardProgram`: stages of weighted terms (JSON; schema in ``schema/reward_program.schema.json``),
  validated before use (:class:`ProgramError` names the place); model output is parsed, never executed.
- :func:`compile_program`: a program + a scene -> one :class:`StageReward` per stage,
  ``reward(traj [B, T, 3], gripper [B, T] | None, progress) -> [B]`` with autograd.
- :class:`TrajectoryMap` / :class:`ChunkMap`: action chunks (delta, absolute, joint) -> trajectories.
- :func:`make_synthesizer`: ``offline`` rules, a local ``transformers`` VLM, or an ``openai`` endpoint.
- :class:`RewardSession`: one episode's program, current stage and switching, and its reward.
- :func:`term`: the decorator that registers a new term.
"""

from policy_steer.vlm_rewards.compile import CompiledProgram, StageReward, compile_program
from policy_steer.vlm_rewards.errors import ProgramError, ProgramParseError, SynthesisFailed
from policy_steer.vlm_rewards.program import ExitCondition, RewardProgram, Stage, Term
from policy_steer.vlm_rewards.session import RewardSession, SwitchConfig
from policy_steer.vlm_rewards.synthesis import (
    OfflineSynthesizer,
    SynthesisConfig,
    Synthesizer,
    make_synthesizer,
)
from policy_steer.vlm_rewards.terms import TermInput, registered_terms, term
from policy_steer.vlm_rewards.trajectory import ChunkMap, TrajectoryMap



def __getattr__(name: str):
    # imported lazily so that `python -m policy_steer.vlm_rewards.json_schema` runs the module only once
    if name in ("SCHEMA_PATH", "program_schema"):
        from policy_steer.vlm_rewards import json_schema

        return getattr(json_schema, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


__all__ = [
    "SCHEMA_PATH",
    "ChunkMap",
    "CompiledProgram",
    "ExitCondition",
    "OfflineSynthesizer",
    "ProgramError",
    "ProgramParseError",
    "RewardProgram",
    "RewardSession",
    "Stage",
    "StageReward",
    "SwitchConfig",
    "SynthesisConfig",
    "SynthesisFailed",
    "Synthesizer",
    "Term",
    "TermInput",
    "TrajectoryMap",
    "compile_program",
    "make_synthesizer",
    "program_schema",
    "registered_terms",
    "term",
]
