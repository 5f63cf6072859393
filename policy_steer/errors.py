"""Errors a user can act on. The CLI prints their message as one line and exits non-zero."""


class PolicySteerError(Exception):
    """Base class: the message names what was wrong and where."""


class ConfigError(PolicySteerError):
    """A bad option, an unknown task/variant/strategy, a value out of range."""


class CheckpointError(PolicySteerError):
    """A folder that is not a loadable checkpoint, or a checkpoint that does not fit the task."""


class DatasetError(PolicySteerError):
    """A missing, empty or mismatched dataset; an output folder that already holds one."""


class ValidationError(PolicySteerError):
    """Data that failed a shape, dtype or finiteness check (observations, actions, programs)."""
