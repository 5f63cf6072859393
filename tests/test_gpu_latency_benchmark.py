"""benchmarks/gpu_latency.py runs end to end on a CPU at the tests' sizes (the device machine runs it full size)."""

from __future__ import annotations

import importlib.util
import json
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
CONFIGS = {"m1", "taco16_once", "taco16_per_candidate", "vls4", "rtc"}


def _bench():
    spec = importlib.util.spec_from_file_location("gpu_latency", REPO / "benchmarks" / "gpu_latency.py")
    mod = importlib.util.module_from_spec(spec)
    sys.modules["gpu_latency"] = mod  # its dataclasses look their module up there
    spec.loader.exec_module(mod)
    return mod


def _run(tmp_path: Path, policies: str) -> list[dict]:
    out = tmp_path / "gpu_latency"
    assert _bench().main(["--small", "--device", "cpu", "--policies", policies, "--rounds", "2", "--warmup", "1",
                          "--threads", "1", "--out", str(out)]) == 0
    data = json.loads((out / "gpu_latency.json").read_text())
    assert (out / "gpu_latency.md").read_text().count("\n| ") == len(data["rows"]) + 1  # and the header row
    return data["rows"]


def test_a_small_pi0_runs_every_configuration(tmp_path):
    rows = _run(tmp_path, "pi0")
    assert {r["config"] for r in rows} == CONFIGS
    by = {r["config"]: r for r in rows}
    assert by["m1"]["ratio_to_m1"] == 1.0
    assert by["taco16_once"]["verifier"] == "random"  # a random-weight VLA has no fitted verifier
    assert all(r["p95_ms"] >= r["p50_ms"] > 0 and r["peak_mib"] > 0 for r in rows)
    assert all(r["dtype"] == "float32" and not r["compiled"] and r["ratio_to_fp32_m1"] == r["ratio_to_m1"] for r in rows)


@pytest.mark.slow
def test_every_policy_small(tmp_path):
    rows = _run(tmp_path, "diffusion,pi0,pi05")
    assert {(r["policy"], r["config"]) for r in rows} == {(p, c) for p in ("diffusion", "pi0", "pi05") for c in CONFIGS}
    assert {r["verifier"] for r in rows if r["policy"] == "diffusion"} == {"cfn"}


@pytest.mark.parametrize("kind", ["pi0", "pi05"])
def test_the_full_size_backbone_is_lerobots_own(kind):
    """The benchmark's full-size VLA has exactly the parameters of lerobot's own default pi0 / pi05
    (built on the meta device: shapes only, no memory)."""
    import torch
    from lerobot.configs.types import FeatureType, PolicyFeature
    from lerobot.policies.factory import get_policy_class, make_policy_config

    from policy_steer.policies.tiny_backbones import tiny_pi_backbone

    bench = _bench()
    inputs = {"observation.state": PolicyFeature(FeatureType.STATE, (19,)),
              bench.CAMERA: PolicyFeature(FeatureType.VISUAL, (3, 224, 224))}
    cfg = make_policy_config(kind, input_features=inputs, output_features={"action": PolicyFeature(FeatureType.ACTION, (3,))},
                             chunk_size=50, n_action_steps=50, image_resolution=(224, 224), num_inference_steps=10,
                             device="cpu", push_to_hub=False)
    cfg.device = "meta"  # lerobot moves the built model to cfg.device
    spec = bench.pi_backbone(full=True)
    spec.configure(cfg)
    with torch.device("meta"):
        with tiny_pi_backbone(spec):
            ours = get_policy_class(kind)(cfg)
        theirs = get_policy_class(kind)(cfg)
    shapes = {n: tuple(p.shape) for n, p in ours.named_parameters()}
    assert shapes == {n: tuple(p.shape) for n, p in theirs.named_parameters()}
    assert sum(p.numel() for p in ours.parameters()) > 3e9  # gemma_2b + so400m + gemma_300m


def test_compute_settings_are_measured_or_skipped_by_name(tmp_path):
    """--dtype / --compile lists: every combination is a measured row set or a skipped entry with its reason."""
    out = tmp_path / "gpu_latency"
    assert _bench().main(["--small", "--device", "cpu", "--policies", "pi0", "--rounds", "1", "--warmup", "1",
                          "--threads", "1", "--dtype", "float32,bf16", "--compile", "false,true", "--out", str(out)]) == 0
    data = json.loads((out / "gpu_latency.json").read_text())
    rows = data["rows"]
    assert {(r["dtype"], r["compiled"]) for r in rows} == {("float32", False), ("bfloat16", False)}
    assert {r["config"] for r in rows if r["dtype"] == "bfloat16"} == CONFIGS
    fp32_m1 = next(r for r in rows if r["dtype"] == "float32" and r["config"] == "m1")
    assert fp32_m1["ratio_to_fp32_m1"] == 1.0
    assert all(r["ratio_to_fp32_m1"] > 0 for r in rows)
    skipped = data["meta"]["skipped"]
    assert {(s["dtype"], s["compiled"]) for s in skipped} == {("float32", True), ("bfloat16", True)}
    assert all("--compile true is not offered for pi0" in s["reason"] for s in skipped)
    assert "Skipped: pi0" in (out / "gpu_latency.md").read_text()


def test_a_bad_dtype_is_refused_by_name():
    from policy_steer.errors import ConfigError

    with pytest.raises(ConfigError, match="--dtype 'float8'"):
        _bench().main(["--small", "--device", "cpu", "--policies", "pi0", "--dtype", "float32,float8"])
