"""Offscreen camera images of a task world.

On these CPU-only machines MuJoCo renders through Mesa's software rasteriser (llvmpipe), either with
EGL (``MUJOCO_GL=egl``, the default that ``import policy_steer.envs`` sets when nothing else is set)
or OSMesa (``MUJOCO_GL=osmesa``, needs Debian's ``libosmesa6``); both work here. MuJoCo
reads the variable when it is first imported, so set it before importing mujoco yourself.
Measured here (2 shared cores, llvmpipe, shadows off; pick-place, clutter variant):
96x96 4.5-10 ms per frame, 240x320 8-18 ms, 480x640 10-38 ms with EGL; OSMesa about the same at
96x96 and up to 2x slower at larger sizes. A control step of physics costs about 1 ms, so one
96x96 camera makes a step roughly 10x dearer (``benchmarks/env_speed.py`` measures it per task).

One ``mujoco.Renderer`` (one GL context) is kept per image size and created on first use, so an
environment that never renders never touches GL.
"""

from __future__ import annotations

import atexit
import weakref

import mujoco
import numpy as np

from policy_steer.errors import ConfigError


_LIVE: "weakref.WeakSet[CameraRenderer]" = weakref.WeakSet()
_EXIT_HOOK = False


def _close_all() -> None:
    # GL contexts freed by the garbage collector during interpreter shutdown raise EGL errors; free them
    # first. Registered after the first context exists, so it runs before MuJoCo's own eglTerminate hook.
    for r in list(_LIVE):
        r.close()


class CameraRenderer:
    """uint8 [h, w, 3] images of named cameras of one model."""

    def __init__(self, model: mujoco.MjModel, scene_option: mujoco.MjvOption | None = None,
                 reflections: bool = True) -> None:
        self.model = model
        self.scene_option = scene_option  # which geom groups are drawn (None: MuJoCo's defaults)
        self.reflections = reflections  # off: about half the cost where reflections are invisible at these sizes
        self._renderers: dict[tuple[int, int], mujoco.Renderer] = {}
        _LIVE.add(self)

    def render(self, data: mujoco.MjData, camera: str, size: tuple[int, int]) -> np.ndarray:
        h, w = size
        vis = self.model.vis.global_
        if h > vis.offheight or w > vis.offwidth:
            raise ConfigError(f"image size {h}x{w} exceeds the offscreen buffer {vis.offheight}x{vis.offwidth}")
        r = self._renderers.get((h, w))
        if r is None:
            try:
                r = self._renderers[(h, w)] = mujoco.Renderer(self.model, height=h, width=w)
            except Exception as e:  # no GL at all: say what to install / set
                raise RuntimeError(
                    f"offscreen rendering failed ({e}); set MUJOCO_GL=egl or osmesa before importing mujoco and "
                    "install Mesa (libegl-mesa0 libgl1-mesa-dri, or libosmesa6)"
                ) from e
            if not self.reflections:
                r.scene.flags[mujoco.mjtRndFlag.mjRND_REFLECTION] = 0
            global _EXIT_HOOK
            if not _EXIT_HOOK:
                atexit.register(_close_all)
                _EXIT_HOOK = True
        r.update_scene(data, camera=camera, scene_option=self.scene_option)
        return r.render()

    def close(self) -> None:
        for r in self._renderers.values():
            r.close()
        self._renderers.clear()
