"""Maps the root folders into one namespace; all other metadata is in pyproject.toml.

`envs/`, `vlm_rewards/` and `hardware/` install as `policy_steer.envs`, `policy_steer.vlm_rewards`
and `policy_steer.hardware`; no top-level `envs` or `hardware` package is installed.
"""

from setuptools import find_packages, setup

ROOTS = {
    "policy_steer": "policy_steer",
    "policy_steer.envs": "envs",
    "policy_steer.vlm_rewards": "vlm_rewards",
    "policy_steer.hardware": "hardware",
}

packages = []
for name, folder in ROOTS.items():
    packages.append(name)
    packages += [f"{name}.{sub}" for sub in find_packages(folder)]

setup(packages=packages, package_dir=ROOTS)
