"""Data only: ``reward_program.schema.json``, the published JSON Schema of reward programs
(written by ``python -m policy_steer.vlm_rewards.json_schema --write``)."""
