"""Issue 18: ``bench --variant_params`` is an axis of the grid, the parameters are in every record and
results entry, and results.md / the plots carry the robustness curves and breaking points."""

from __future__ import annotations

import json

import pytest

from policy_steer.bench.cells import decode_params, encode_params, expand_cells, parse_variant_params
from policy_steer.bench.config import BenchConfig
from policy_steer.bench.robustness import breaking_point, curves, robustness_table
from policy_steer.cli.main import main
from policy_steer.config import parse_config
from policy_steer.errors import ConfigError


def cells_of(*args: str):
    return expand_cells(parse_config(BenchConfig, list(args)))


def test_one_cell_per_value_only_on_the_variant_it_belongs_to():
    cells = cells_of("--task", "push,pick-place", "--variant", "nominal,obstacle,shifted-surface", "--steer", "none,vls",
                     "--variant_params", "obstacle.height=0.04,0.08,0.17;surface.scale=0..2/3")
    by = {}
    for c in cells:
        by.setdefault((c.task, c.variant, c.steer), []).append(c.variant_params)
    assert by[("push", "nominal", "none")] == [{}]
    assert [p["obstacle.height"] for p in by[("pick-place", "obstacle", "vls")]] == [0.04, 0.08, 0.17]
    assert [p["surface.scale"] for p in by[("push", "shifted-surface", "none")]] == [0.0, 1.0, 2.0]
    # the whole parameter set, defaults included, is in the cell's settings (so in every record)
    p = by[("pick-place", "obstacle", "none")][0]
    assert p == {"obstacle.height": 0.04, "obstacle.thickness": 0.03, "obstacle.width": 0.1, "obstacle.at_min": 0.4,
                 "obstacle.at_max": 0.6}
    # without --variant_params every cell still names its variant's (default) parameters
    default = cells_of("--task", "push", "--variant", "obstacle")
    assert default[0].variant_params["obstacle.height"] == 0.12 and default[0].describe()["variant_params"]


def test_parsing_round_trips_and_ranges():
    assert parse_variant_params("obstacle.height=0.04..0.16/4") == [("obstacle.height", ["0.04", "0.08", "0.12", "0.16"])]
    assert parse_variant_params(" obstacle.height=0.1 ; obstacle.radius=0.02,0.03 ") == [
        ("obstacle.height", ["0.1"]), ("obstacle.radius", ["0.02", "0.03"])]
    p = {"obstacle.height": 0.1 + 0.2, "clutter.count": 3}
    assert decode_params(encode_params(p)) == p


@pytest.mark.parametrize("args,words", [
    (["--variant", "obstacle", "--variant_params", "surface.scale=1,2"], ["surface.scale", "'shifted-surface'", "not in --variant obstacle"]),
    (["--variant", "obstacle", "--variant_params", "obstacle.height=0.5"], ["obstacle.height = 0.5", "[0.02, 0.3]"]),
    (["--variant", "obstacle", "--variant_params", "obstacle.hieght=0.1"], ["unknown variant parameter obstacle.hieght", "obstacle.height in"]),
    (["--variant", "obstacle", "--variant_params", "obstacle.height"], ["is not name=v1,v2"]),
    (["--variant", "obstacle", "--variant_params", "obstacle.height=abc"], ["obstacle.height", "'abc' is not a number"]),
])
def test_bad_variant_params_are_refused_before_anything_runs(args, words):
    with pytest.raises(ConfigError) as e:
        cells_of("--task", "push", *args)
    for w in words:
        assert w in str(e.value)


def test_bench_sweep_records_parameters_pairs_seeds_and_writes_curves(tmp_path, capsys):
    out = tmp_path / "sweep"
    assert main(["bench", "--task", "reach", "--variant", "nominal,obstacle", "--steer", "none", "--episodes", "3",
                 "--workers", "1", "--quiet", "true", "--variant_params", "obstacle.above_path=-0.05,0.035,0.1",
                 "--out", str(out)]) == 0
    header, *episodes = [json.loads(x) for x in (out / "episodes.jsonl").read_text().splitlines()]
    assert {c["settings"]["variant_params"] for c in header["cells"] if c["variant"] == "obstacle"} == {
        f"obstacle.above_path={v!r};obstacle.radius=0.025" for v in (-0.05, 0.035, 0.1)}
    runs = json.loads((out / "results.json").read_text())["runs"]
    obstacle = [r for r in runs if r["variant"] == "obstacle"]
    assert sorted(r["params"]["obstacle.above_path"] for r in obstacle) == [-0.05, 0.035, 0.1]
    assert len({tuple(r["seeds"]) for r in runs}) == 1  # paired: the same seeds at every point
    md = (out / "results.md").read_text()
    assert "## Robustness" in md and "obstacle.above_path" in md
    assert (out / "robustness_reach_obstacle_vs_obstacle_above_path.png").stat().st_size > 0
    # the pillar below the path is no obstacle: those episodes are the nominal ones, action for action
    by_cell = {}
    for e in episodes:
        by_cell.setdefault(header["cells"][e["cell"]]["settings"]["variant_params"], []).append(e["actions"]["sha256"])
    assert by_cell["obstacle.above_path=-0.05;obstacle.radius=0.025"] == by_cell[""]


def _run(variant, x, k, n=50, steer="none"):
    from policy_steer.bench.results import wilson_ci

    params = {"obstacle.height": x} if variant == "obstacle" else {}
    return {"task": "pick-place", "variant": variant, "steer": steer, "mode": "sync", "latency_steps": 0, "params": params,
            "success_rate": k / n, "ci95": wilson_ci(k, n), "episodes": n}


def test_breaking_point_is_interpolated_with_an_interval():
    runs = [_run("nominal", None, 40), *[_run("obstacle", x, k) for x, k in ((0.04, 40), (0.08, 30), (0.12, 10), (0.17, 0))]]
    (c,) = curves(runs)
    assert c["nominal"] == 0.8 and c["nominal_from"] == "nominal variant" and c["level"] == pytest.approx(0.4)
    kind, x = c["breaks"]  # 0.6 at 0.08, 0.2 at 0.12: 0.4 is crossed half-way
    assert kind == "at" and x == pytest.approx(0.10)
    assert c["breaks_lo"][1] <= x <= c["breaks_hi"][1]
    table = robustness_table(runs)
    assert "| pick-place | obstacle | obstacle.height (larger is harder) | steer=none |" in table and "| 0.1 |" in table
    # never below half, and already below at the mildest point
    assert breaking_point([(0.0, 0.9, 0.8, 1.0), (1.0, 0.8, 0.7, 0.9)], 0.9)["breaks"] == ("above", None)
    assert breaking_point([(0.0, 0.1, 0.0, 0.2), (1.0, 0.0, 0.0, 0.1)], 0.9)["breaks"] == ("below", 0.0)
    # a curve that rises with the value reads smaller as harder (a pillar's distance from the path)
    down = breaking_point([(0.05, 0.0, 0.0, 0.07), (0.075, 0.54, 0.4, 0.67), (0.1, 0.54, 0.4, 0.67)], 0.98)
    assert down["harder"] == "smaller" and down["breaks"][0] == "at" and 0.05 < down["breaks"][1] < 0.075
