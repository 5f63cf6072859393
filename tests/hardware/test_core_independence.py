"""DESIGN.md: the core never imports ``policy_steer.hardware``.

Every module of the ``policy_steer`` namespace outside ``hardware/`` (the core, and ``envs/`` and
``vlm_rewards/``, which install into the same namespace) is parsed; no import statement and no
``importlib.import_module``/``__import__`` call with a literal may name ``policy_steer.hardware``
(relative imports are resolved). A command registry may hold the module path as a plain string.
A second check imports the CLI entry point and the runtime in a fresh interpreter and looks at
``sys.modules``.
"""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
FOLDERS = {"policy_steer": ROOT / "policy_steer", "policy_steer.envs": ROOT / "envs",
           "policy_steer.vlm_rewards": ROOT / "vlm_rewards"}
TARGET = "policy_steer.hardware"


def _module_name(package: str, folder: Path, path: Path) -> str:
    parts = list(path.relative_to(folder).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts = parts[:-1]
    return ".".join([package, *parts])


def _imports(tree: ast.AST, module: str, is_package: bool) -> list[str]:
    names = []
    base = module.split(".") if is_package else module.split(".")[:-1]
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names += [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                anchor = base[: len(base) - (node.level - 1)]
                mod = ".".join(anchor + ([node.module] if node.module else []))
            else:
                mod = node.module or ""
            names.append(mod)
            names += [f"{mod}.{a.name}" for a in node.names]
        elif isinstance(node, ast.Call):
            fn = node.func
            fname = fn.attr if isinstance(fn, ast.Attribute) else getattr(fn, "id", "")
            if fname in ("import_module", "__import__") and node.args and isinstance(node.args[0], ast.Constant):
                names.append(str(node.args[0].value))
    return names


def test_no_core_module_imports_hardware():
    offenders = []
    n_files = 0
    for package, folder in FOLDERS.items():
        for path in sorted(folder.rglob("*.py")):
            n_files += 1
            module = _module_name(package, folder, path)
            tree = ast.parse(path.read_text(), filename=str(path))
            for name in _imports(tree, module, path.name == "__init__.py"):
                if name == TARGET or name.startswith(TARGET + "."):
                    offenders.append(f"{path.relative_to(ROOT)} imports {name}")
    assert n_files > 50  # the scan saw the code base
    assert not offenders, offenders


def test_the_cli_and_the_runtime_load_without_hardware():
    code = (
        "import sys, policy_steer.cli.main, policy_steer.runtime.loop, policy_steer.transport.client; "
        "print(sorted(m for m in sys.modules if m.startswith('policy_steer.hardware')))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT, timeout=120)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "[]"
