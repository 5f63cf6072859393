"""Hand-built scenes (no simulator) for the vlm_rewards tests: one per task, and variants of them."""

from __future__ import annotations

import copy

from policy_steer.scene import Scene, SceneObject

SURFACE = 0.0
WORKSPACE = ([0.2, -0.35, -0.02], [0.75, 0.35, 0.45])


def _table() -> SceneObject:
    return SceneObject("table", "table", "box", [0.45, 0.0, -0.02], [0.33, 0.42, 0.02])


def push_scene(variant: str = "nominal") -> Scene:
    objects = [
        _table(),
        SceneObject("block", "manipuland", "box", [0.45, 0.0, 0.025], [0.025, 0.025, 0.025]),
        SceneObject("target", "target", "cylinder", [0.60, 0.10, 0.0008], [0.03, 0.03, 0.0008]),
    ]
    keypoints = {
        "ee": [0.35, 0.0, 0.15],
        "block": [0.45, 0.0, 0.025],
        "block_push_face": [0.43, -0.0139, 0.025],
        "target": [0.60, 0.10, 0.0008],
    }
    scene = Scene("push", variant, "push the block into the target region", objects, keypoints, SURFACE,
                  list(WORKSPACE[0]), list(WORKSPACE[1]), [0.35, 0.0, 0.15], 0.0)
    return _apply_variant(scene, variant)


def pick_place_scene(variant: str = "nominal") -> Scene:
    objects = [
        _table(),
        SceneObject("cube", "manipuland", "box", [0.45, -0.1, 0.02], [0.02, 0.02, 0.02]),
        SceneObject("target", "target", "cylinder", [0.55, 0.12, 0.0008], [0.03, 0.03, 0.0008]),
    ]
    keypoints = {
        "ee": [0.35, 0.0, 0.2],
        "cube": [0.45, -0.1, 0.02],
        "cube_top": [0.45, -0.1, 0.04],
        "target": [0.55, 0.12, 0.0008],
        "place_point": [0.55, 0.12, 0.0208],
    }
    scene = Scene("pick-place", variant, "pick up the cube and place it on the target", objects, keypoints, SURFACE,
                  list(WORKSPACE[0]), list(WORKSPACE[1]), [0.35, 0.0, 0.2], 1.0)
    return _apply_variant(scene, variant)


def reach_scene(variant: str = "nominal") -> Scene:
    objects = [_table(), SceneObject("goal", "goal", "sphere", [0.55, 0.1, 0.2], [0.02, 0.02, 0.02])]
    scene = Scene("reach", variant, "reach the goal", objects, {"ee": [0.35, 0.0, 0.2], "goal": [0.55, 0.1, 0.2]},
                  SURFACE, list(WORKSPACE[0]), list(WORKSPACE[1]), [0.35, 0.0, 0.2], 0.0)
    return _apply_variant(scene, variant)


def lift_scene(variant: str = "nominal") -> Scene:
    objects = [_table(), SceneObject("cube", "manipuland", "box", [0.0, 0.0, 0.83], [0.021, 0.021, 0.021])]
    return Scene("lift", variant, "lift the cube", objects, {"cube": [0.0, 0.0, 0.83]}, 0.81,
                 [-0.3, -0.3, 0.8], [0.3, 0.3, 1.3], [0.0, 0.0, 1.0], 1.0)


def _apply_variant(scene: Scene, variant: str) -> Scene:
    scene = copy.deepcopy(scene)
    if variant == "obstacle":
        scene.objects.append(SceneObject("obstacle", "obstacle", "cylinder", [0.52, 0.05, 0.06], [0.02, 0.02, 0.06]))
    elif variant == "clutter":
        goal = next(o for o in scene.objects if o.kind in ("target", "goal")).position
        for i, (dx, dy) in enumerate([(0.08, 0.0), (-0.06, 0.05), (0.0, -0.09)]):
            scene.objects.append(SceneObject(f"distractor_{i}", "distractor", "box",
                                             [goal[0] + dx, goal[1] + dy, 0.02], [0.015, 0.015, 0.02], yaw=0.3 * i))
    elif variant == "shifted-surface":
        dz = 0.03
        scene.surface_height += dz
        for o in scene.objects:
            o.position = [o.position[0] + 0.02, o.position[1], o.position[2] + dz]
        scene.keypoints = {k: [v[0] + 0.02, v[1], v[2] + dz] for k, v in scene.keypoints.items()}
    return scene


HAND_BUILT = {"reach": reach_scene, "push": push_scene, "pick-place": pick_place_scene, "lift": lift_scene}
