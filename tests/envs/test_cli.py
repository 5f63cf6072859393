"""policy-steer envs list / envs show."""

from __future__ import annotations

import json

import av
import numpy as np
from PIL import Image

from policy_steer.cli.main import main


def test_envs_list_prints_shapes(capsys):
    assert main(["envs", "list", "--json", "true"]) == 0
    rows = {r["task"]: r for r in json.loads(capsys.readouterr().out)}
    assert set(rows) >= {"reach", "push", "pick-place", "lift"}
    assert (rows["reach"]["state_dim"], rows["reach"]["env_state_dim"], rows["reach"]["action_dim"]) == (12, 3, 3)
    assert (rows["push"]["state_dim"], rows["push"]["env_state_dim"], rows["push"]["action_dim"]) == (19, 10, 3)
    assert (rows["pick-place"]["state_dim"], rows["pick-place"]["action_dim"]) == (19, 4)
    assert rows["push"]["variants"] == ["nominal", "obstacle", "shifted-surface", "clutter", "moving-goal"]
    assert main(["envs", "list"]) == 0
    table = capsys.readouterr().out
    assert "PolicySteer/PickPlace-v0" in table and "moving-goal" in table


def test_envs_show_writes_a_picture_and_a_video(tmp_path, capsys):
    png, mp4 = tmp_path / "shot.png", tmp_path / "ep.mp4"
    code = main(["envs", "show", "--task", "reach", "--variant", "obstacle", "--out", str(png),
                 "--video", str(mp4), "--size", "48,64", "--seed", "1"])
    assert code == 0
    img = np.asarray(Image.open(png))
    assert img.shape == (48, 64, 3) and img.std() > 10
    out = capsys.readouterr().out
    assert "success" in out  # the expert goes round the pillar
    with av.open(str(mp4)) as c:
        frames = sum(1 for _ in c.decode(video=0))
    steps = int(out.split(": ")[1].split(" steps")[0])
    assert frames == steps + 1


def test_envs_show_bad_task(capsys):
    assert main(["envs", "show", "--task", "nope"]) == 2
    assert "unknown task 'nope'" in capsys.readouterr().err
