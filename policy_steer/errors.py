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


# Why a steering request cannot be served (the wire protocol's error codes of the same names).
CONTEXT_REQUIRED = "context_required"  # the strategy needs episode context the caller did not give
STEER_UNAVAILABLE = "steer_unavailable"  # a resource the strategy needs is missing (TACO's verifier)
STEER_UNSUPPORTED = "steer_unsupported"  # an option the policy (family, action space) does not support
CONTEXT_MISMATCH = "context_mismatch"  # a context for another task, or a robot that does not fit the policy
REFUSAL_CODES = (CONTEXT_REQUIRED, STEER_UNAVAILABLE, STEER_UNSUPPORTED, CONTEXT_MISMATCH)


class SteeringRefused(ConfigError):
    """A steering strategy that was asked for cannot act; ``code`` is one of :data:`REFUSAL_CODES`.

    Raised instead of running weaker in silence: the caller (the benchmark, the server, a user) is told.
    """

    def __init__(self, code: str, reason: str, strategy: str | None = None) -> None:
        if code not in REFUSAL_CODES:
            raise ValueError(f"unknown refusal code {code!r}")
        super().__init__(f"{code}: {reason}")
        self.code = code
        self.reason = reason
        self.strategy = strategy
