"""The ``policy-steer`` command line: one module per command, each a dataclass config and a run()."""
