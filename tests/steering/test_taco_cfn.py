"""The Coin Flipping Network alone: optimistic start, counts that rise in the training support, files."""

from __future__ import annotations

import numpy as np
import torch

from policy_steer.steering.taco.cfn import CFNConfig, CoinFlipNetwork, RunningMeanStd, TrainConfig, train_cfn
from policy_steer.steering.taco.evaluation import auc, perturb


def _clusters(n: int, f: int = 24, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    """Features on a few tight clusters (the training support), and the cluster centres."""
    g = torch.Generator().manual_seed(seed)
    centres = torch.randn(6, f, generator=g) * 3
    idx = torch.randint(0, 6, (n,), generator=g)
    return centres[idx] + 0.3 * torch.randn(n, f, generator=g), centres


def test_running_statistics_match_the_batch_statistics():
    rs = RunningMeanStd(3)
    x = torch.randn(1000, 3) * torch.tensor([1.0, 2.0, 3.0]) + 5
    for part in x.split(97):
        rs.update(part)
    assert torch.allclose(rs.mean, x.mean(0), atol=1e-4)
    assert torch.allclose(rs.var, x.var(0, unbiased=False), rtol=1e-3)


def test_untrained_cfn_reads_a_count_near_one_everywhere():
    x, _ = _clusters(512)
    cfn = CoinFlipNetwork(CFNConfig(in_dim=x.shape[1]))
    cfn.set_feature_stats(x)
    cfn.prior_output(cfn.scale(x), update_stats=True)
    with torch.no_grad():
        f = cfn(cfn.scale(x))
    # the normalised prior: mean square 1 over the data, i.e. a count of 1 on average
    assert abs(float(f.pow(2).mean()) - 1.0) < 0.05


def test_fitted_count_is_high_in_support_and_near_one_for_never_seen_features():
    x, centres = _clusters(1500)
    cfn = CoinFlipNetwork(CFNConfig(in_dim=x.shape[1], width=32, depth=1))
    train_cfn(cfn, x, TrainConfig(steps=200, seed=0))
    g = torch.Generator().manual_seed(1)
    held = centres[torch.randint(0, 6, (200,), generator=g)] + 0.3 * torch.randn(200, x.shape[1], generator=g)
    unseen = torch.randn(200, x.shape[1], generator=g) * 3  # random directions at the data's scale
    c_in, c_out = cfn.count(held), cfn.count(unseen)
    assert float(c_in.median()) > 5 * float(c_out.median())
    assert 0.1 < float(c_out.median()) < 3.0  # "about one visit"
    assert auc(c_in, c_out) > 0.95


def test_save_load_round_trip(tmp_path):
    x, _ = _clusters(300)
    cfn = CoinFlipNetwork(CFNConfig(in_dim=x.shape[1], width=16, depth=1, feature_scale=2.0, prior_seed=3))
    train_cfn(cfn, x, TrainConfig(steps=30))
    cfn.save(tmp_path)
    back = CoinFlipNetwork.load(tmp_path)
    assert back.cfg == cfn.cfg
    torch.testing.assert_close(back.count(x[:50]), cfn.count(x[:50]))


def test_prior_depends_on_its_seed_only():
    torch.manual_seed(123)
    a = CoinFlipNetwork(CFNConfig(in_dim=8, prior_seed=5))
    torch.manual_seed(456)
    b = CoinFlipNetwork(CFNConfig(in_dim=8, prior_seed=5))
    for pa, pb in zip(a.prior.parameters(), b.prior.parameters()):
        torch.testing.assert_close(pa, pb)


def test_auc_and_perturbations():
    assert auc([2, 3, 4], [0, 1]) == 1.0
    assert auc([0, 1], [2, 3]) == 0.0
    assert auc([1, 1], [1, 1]) == 0.5
    x0 = torch.zeros(6, 8, 4)
    out, kinds = perturb(x0, action_dim=3, scale=0.5, generator=torch.Generator().manual_seed(0))
    assert kinds[:3] == ["offset", "noise", "reverse"]
    assert torch.all(out[..., 3] == 0)  # padding dims untouched
    rms = out[:2, :, :3].pow(2).mean(dim=(1, 2)).sqrt().numpy()
    np.testing.assert_allclose(rms, 0.5, rtol=1e-4)


def test_report_reads_success_against_m_and_the_target():
    from policy_steer.steering.taco.report import summarize

    def run(steer, m, verifier, k, p50):
        from policy_steer.bench.results import wilson_ci

        return {"task": "push", "variant": "clutter", "policy": "checkpoints/push-diffusion", "mode": "sync",
                "latency_steps": 0, "steer": steer, "candidates": m, "verifier": verifier, "episodes": 100,
                "successes": k, "success_rate": k / 100, "ci95": wilson_ci(k, 100), "chunk_latency_ms": {"p50": p50}}

    runs = [run("none", None, None, 50, 10.0), run("taco", 1, "cfn", 50, 11.0), run("taco", 16, "cfn", 75, 33.0),
            run("taco", 1, "random", 50, 10.0), run("taco", 16, "random", 52, 30.0)]
    md, verdicts = summarize(runs)
    assert verdicts[0]["cfn_beats_m1_by_10_points"] is True and verdicts[0]["cfn_beats_random"] is True
    assert "| 16 | 0.75" in md and "3.00" in md  # latency ratio to M = 1
    assert verdicts[0]["p_cfn_vs_random"] < 0.01 and verdicts[0]["p_cfn_vs_m1"] < 0.01

    # M = 1 chooses nothing: one M = 1 run is the reference of every verifier
    md, verdicts = summarize([run("taco", 1, "cfn", 50, 10.0), run("taco", 16, "cfn", 60, 30.0),
                              run("taco", 16, "random", 55, 40.0)])
    assert "| 16 | 0.60 [0.50, 0.69] | 0.55 [0.45, 0.64] | 3.00 | 4.00 |" in md, md
    assert verdicts[0]["cfn_beats_m1_by_10_points"] is False  # +10 points, but the intervals overlap


def test_report_merges_consecutive_seed_ranges_of_one_grid(tmp_path):
    import json

    import pytest

    from policy_steer.bench.results import pool_runs, wilson_ci
    from policy_steer.steering.taco.report import main

    def run(m, verifier, seeds, wins, p50):
        k = sum(wins)
        return {"task": "push", "variant": "nominal", "policy": "checkpoints/push-diffusion", "mode": "sync",
                "latency": "0", "latency_steps": 0, "steer": "taco", "candidates": m, "verifier": verifier,
                "episodes": len(seeds), "successes": k, "success_rate": k / len(seeds), "ci95": wilson_ci(k, len(seeds)),
                "seeds": seeds, "per_episode_success": wins, "chunk_latency_ms": {"p50": p50, "p95": p50, "mean": p50},
                "mean_episode_steps": 100.0, "failures": {"timeout": len(seeds) - k}, "steer_figures": {}}

    a = [run(1, "cfn", [0, 1], [True, False], 10.0), run(16, "cfn", [0, 1], [True, True], 30.0)]
    b = [run(1, "cfn", [2, 3, 4, 5], [False, False, False, True], 13.0), run(16, "cfn", [2, 3, 4, 5], [True] * 4, 30.0)]
    merged = pool_runs(a + b)
    m1 = merged[0]
    assert (m1["episodes"], m1["successes"], m1["seeds"]) == (6, 2, [0, 1, 2, 3, 4, 5])
    assert m1["ci95"] == wilson_ci(2, 6) and m1["failures"] == {"timeout": 4}
    assert m1["chunk_latency_ms"]["p50"] == pytest.approx((2 * 10 + 4 * 13) / 6)
    with pytest.raises(ValueError, match="same seed"):
        pool_runs(a + a)
    for name, runs in (("a", a), ("b", b)):
        (tmp_path / name).mkdir()
        (tmp_path / name / "results.json").write_text(json.dumps({"meta": {"command": name}, "runs": runs}))
    assert main([str(tmp_path / "a" / "results.json"), str(tmp_path / "b" / "results.json"),
                 "--merged-out", str(tmp_path / "all")]) == 0
    assert json.loads((tmp_path / "all" / "results.json").read_text())["runs"][1]["episodes"] == 6
    assert (tmp_path / "all" / "taco.md").is_file() and (tmp_path / "all" / "taco.png").is_file()
