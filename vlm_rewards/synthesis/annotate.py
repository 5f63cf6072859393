"""Keypoints drawn numbered on the scene image, as VLS shows them to the model.

A :class:`PinholeCamera` projects world points to pixels with MuJoCo's camera convention (the camera
looks along its -z axis, y up, vertical field of view ``fovy``).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import numpy as np
from PIL import Image, ImageDraw

from policy_steer.scene import Scene


@dataclass(frozen=True)
class PinholeCamera:
    position: tuple[float, float, float]  # world metres
    rotation: tuple[tuple[float, float, float], ...]  # 3x3, camera axes as columns in world (MuJoCo cam_xmat)
    fovy_deg: float
    width: int
    height: int

    @classmethod
    def from_mujoco(cls, model: Any, data: Any, camera: str, width: int, height: int) -> "PinholeCamera":
        """The camera ``camera`` of a MuJoCo model in its current pose (after ``mj_forward``)."""
        cam = model.camera(camera)
        return cls(
            tuple(float(v) for v in data.cam_xpos[cam.id]),
            tuple(tuple(float(v) for v in row) for row in data.cam_xmat[cam.id].reshape(3, 3)),
            float(model.cam_fovy[cam.id]),
            int(width),
            int(height),
        )

    def project(self, points: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """World points [N, 3] -> (pixels [N, 2] as (u right, v down), visible [N] bool)."""
        r = np.asarray(self.rotation, dtype=np.float64)
        p = (np.asarray(points, dtype=np.float64) - np.asarray(self.position)) @ r  # camera frame
        depth = -p[:, 2]
        f = 0.5 * self.height / math.tan(math.radians(self.fovy_deg) / 2)
        with np.errstate(divide="ignore", invalid="ignore"):
            u = 0.5 * self.width + f * p[:, 0] / depth
            v = 0.5 * self.height - f * p[:, 1] / depth
        uv = np.stack([u, v], axis=-1)
        visible = (depth > 1e-6) & (u >= 0) & (u < self.width) & (v >= 0) & (v < self.height)
        return uv, visible


def keypoint_numbers(scene: Scene) -> dict[str, int]:
    """Keypoint name -> the number drawn on the image and listed in the prompt (1-based, scene order)."""
    return {name: i + 1 for i, name in enumerate(scene.keypoints)}


def annotate(image: np.ndarray, scene: Scene, camera: PinholeCamera | None) -> Image.Image:
    """uint8 [H, W, 3] -> a PIL image with each visible keypoint drawn as a numbered dot.

    Without a camera the image is returned unannotated (the prompt still lists the keypoints).
    """
    img = Image.fromarray(np.ascontiguousarray(image[..., :3]).astype(np.uint8))
    if camera is None or not scene.keypoints:
        return img
    if (camera.width, camera.height) != img.size:
        # the image may have been rendered at another size than the camera was described at
        sx, sy = img.size[0] / camera.width, img.size[1] / camera.height
    else:
        sx = sy = 1.0
    names = list(scene.keypoints)
    uv, visible = camera.project(np.array([scene.keypoints[n] for n in names]))
    draw = ImageDraw.Draw(img)
    radius = max(2, round(min(img.size) / 80))
    for num, (u, v), vis in zip(keypoint_numbers(scene).values(), uv, visible, strict=True):
        if not vis:
            continue
        x, y = u * sx, v * sy
        draw.ellipse([x - radius, y - radius, x + radius, y + radius], fill=(255, 40, 40), outline=(255, 255, 255))
        label = str(num)
        tx, ty = x + radius + 1, y - radius - 10
        draw.text((tx + 1, ty + 1), label, fill=(0, 0, 0))  # shadow: readable on any background
        draw.text((tx, ty), label, fill=(255, 255, 0))
    return img
