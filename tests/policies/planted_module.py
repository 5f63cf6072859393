"""A module a hostile checkpoint names as a processor step class: importing it leaves a marker file.

tests/policies/test_checkpoint_safety.py checks that a refused checkpoint never imports it.
"""

import os
from pathlib import Path

_marker = os.environ.get("POLICY_STEER_PLANTED_MARKER")
if _marker:
    Path(_marker).touch()


class PlantedStep:  # lerobot would import this module, then instantiate the class with the step's config
    def __init__(self, **config) -> None:
        self.config = config
