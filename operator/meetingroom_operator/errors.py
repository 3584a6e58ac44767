"""The operator's own errors. I/O modules raise these (the library's error kept as the
cause); handlers translate them to ``kopf.TemporaryError``/``PermanentError``."""

from __future__ import annotations


class OperatorError(Exception):
    """Base of every error the operator raises on purpose."""


class ConfigError(OperatorError):
    """A setting is missing or out of range; the operator refuses to start."""


class KubeError(OperatorError):
    """A Kubernetes API call failed."""


class KubeConflict(KubeError):
    """409: someone else changed the object; retry from a fresh read."""


class KubeNotFound(KubeError):
    """404: the object is gone."""


class StoreError(OperatorError):
    """A Redis call failed (unreachable, timeout, bad reply)."""
