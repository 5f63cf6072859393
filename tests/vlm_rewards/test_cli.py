"""``policy-steer synthesize`` and the keypoint annotation of the prompt image."""

from __future__ import annotations

import json

import numpy as np
import pytest

from policy_steer.cli.main import main
from policy_steer.vlm_rewards import RewardProgram
from policy_steer.vlm_rewards.synthesis.annotate import PinholeCamera, annotate, keypoint_numbers
from tests.vlm_rewards.scenes import push_scene


def test_synthesize_prints_and_writes_the_program(tmp_path, capsys):
    out = tmp_path / "sub" / "program.json"
    code = main(["synthesize", "--task", "push", "--variant", "obstacle", "--backend", "offline", "--seed", "3", "--out", str(out)])
    assert code == 0
    printed = json.loads(capsys.readouterr().out)
    assert printed == json.loads(out.read_text())
    program = RewardProgram.from_dict(printed)
    assert program.task == "push" and [s.name for s in program.stages] == ["approach", "push"]
    assert any(t.term == "stay_clear" and t.args["object"] == "obstacle" for t in program.stages[1].terms)


@pytest.mark.parametrize(
    "args,words",
    [
        (["--task", "fold"], "unknown task 'fold'"),
        (["--task", "push", "--variant", "upside-down"], "unknown variant"),
        (["--task", "push", "--backend", "magic"], "unknown synthesis backend"),
        (["--task", "push", "--backend", "transformers", "--model_path", "/nonexistent"], "local model folder"),
    ],
)
def test_bad_options_are_one_error_line(args, words, capsys):
    assert main(["synthesize", *args]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and words in err[0]


def test_pinhole_projection_matches_mujoco_convention():
    # camera 1 m above the origin looking straight down (camera -z = world -z), x right, y up
    cam = PinholeCamera((0.0, 0.0, 1.0), ((1, 0, 0), (0, 1, 0), (0, 0, 1)), 90.0, 200, 100)
    uv, visible = cam.project(np.array([[0.0, 0.0, 0.0], [0.5, 0.0, 0.0], [0.0, 0.25, 0.0], [0.0, 0.0, 2.0]]))
    f = 50.0  # half height / tan(45 deg)
    assert np.allclose(uv[:3], [[100, 50], [100 + 0.5 * f, 50], [100, 50 - 0.25 * f]])
    assert visible.tolist() == [True, True, True, False]  # the last point is behind the camera


def test_annotation_draws_each_visible_keypoint_at_its_projection():
    scene = push_scene()
    cam = PinholeCamera((0.45, 0.0, 1.0), ((1, 0, 0), (0, 1, 0), (0, 0, 1)), 60.0, 160, 120)
    image = np.zeros((120, 160, 3), dtype=np.uint8)
    drawn = np.asarray(annotate(image, scene, cam))
    uv, visible = cam.project(np.array(list(scene.keypoints.values())))
    assert visible.all() and list(keypoint_numbers(scene).values()) == [1, 2, 3, 4]
    for u, v in uv:
        assert drawn[int(round(v)), int(round(u))].tolist() == [255, 40, 40]
    assert np.asarray(annotate(image, scene, None)).sum() == 0  # no camera: unannotated


@pytest.mark.parametrize("task,keypoint", [("push", "block"), ("lift", "cube")])
def test_camera_from_a_task_env_sees_the_object_in_the_image(task, keypoint):
    from policy_steer.cli.synthesize import scene_and_image

    scene, image, cam = scene_and_image(task, "nominal", 0, "front")  # lift: robosuite's agentview
    assert image is not None and cam is not None and (cam.width, cam.height) == (image.shape[1], image.shape[0])
    uv, visible = cam.project(np.array([scene.keypoints[keypoint], scene.ee_position]))
    assert visible.all()
    # the object is drawn where it projects: that pixel is not the table's colour (the table is uniform)
    table_pixel = image[-5, image.shape[1] // 2].astype(int)
    u, v = np.round(uv[0]).astype(int)
    assert np.abs(image[v, u].astype(int) - table_pixel).sum() > 60
