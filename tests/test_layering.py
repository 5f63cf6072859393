"""DESIGN.md's seams: the episode context is core vocabulary, so the reward side (``vlm_rewards/``),
the steering strategies and the training code never import the simulator (``policy_steer.envs``),
and the core never imports ``envs`` or ``hardware`` except where a command joins them (``cli/``).

Every module of those packages is parsed; no import statement, relative import or literal
``import_module`` may name ``policy_steer.envs`` (the AST walk of ``test_core_independence``).
"""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

import pytest

from tests.hardware.test_core_independence import _imports, _module_name

ROOT = Path(__file__).resolve().parents[1]

# package -> folder whose modules must not import the targets
GUARDED = {
    "policy_steer.vlm_rewards": ROOT / "vlm_rewards",
    "policy_steer.steering": ROOT / "policy_steer" / "steering",
    "policy_steer.training": ROOT / "policy_steer" / "training",
    "policy_steer.runtime": ROOT / "policy_steer" / "runtime",
    "policy_steer.transport": ROOT / "policy_steer" / "transport",
    "policy_steer.policies": ROOT / "policy_steer" / "policies",
}
CORE_FILES = ["types.py", "scene.py", "sampler.py", "steered_policy.py", "errors.py", "schedules.py"]


def _offenders(package: str, paths: list[Path], folder: Path, target: str) -> list[str]:
    out = []
    for path in paths:
        module = _module_name(package, folder, path)
        tree = ast.parse(path.read_text(), filename=str(path))
        for name in _imports(tree, module, path.name == "__init__.py"):
            if name == target or name.startswith(target + "."):
                out.append(f"{path.relative_to(ROOT)} imports {name}")
    return out


@pytest.mark.parametrize("package", sorted(GUARDED))
def test_package_does_not_import_the_simulator(package):
    folder = GUARDED[package]
    paths = sorted(folder.rglob("*.py"))
    assert paths
    assert not _offenders(package, paths, folder, "policy_steer.envs")


def test_core_modules_import_neither_envs_nor_hardware():
    folder = ROOT / "policy_steer"
    paths = [folder / f for f in CORE_FILES]
    for target in ("policy_steer.envs", "policy_steer.hardware"):
        assert not _offenders("policy_steer", paths, folder, target)


def test_scene_and_context_load_without_the_simulator():
    code = (
        "import sys, policy_steer.types, policy_steer.scene, policy_steer.vlm_rewards.session, "
        "policy_steer.steering.vls.episode; "
        "print(sorted(m for m in sys.modules if m.startswith('policy_steer.envs')))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT, timeout=120)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "[]"
