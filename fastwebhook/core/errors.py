"""One family of errors: each says what was wrong and where."""


class FastwebhookError(Exception):
    """Base of every error fastwebhook raises on purpose."""


class ConfigError(FastwebhookError):
    """A config problem at a TOML key path, e.g. ``workflows.github.nodes[2].url``."""

    def __init__(self, path: str, message: str):
        super().__init__(f"{path}: {message}" if path else message)
        self.path = path
        self.message = message


class ConfigErrors(FastwebhookError):
    """Every problem found in one config, so `check` can print them all at once."""

    def __init__(self, errors: list[ConfigError]):
        super().__init__("\n".join(str(e) for e in errors))
        self.errors = errors


class RequestError(FastwebhookError):
    """A request we refuse: the HTTP status, the metric reason and a message for the sender.

    ``detail`` goes to the request log only (it may say more than the sender should learn,
    but never a secret).
    """

    status = 400
    reason = "malformed"
    headers: tuple[tuple[bytes, bytes], ...] = ()   # extra response headers (Retry-After, WWW-Authenticate)

    def __init__(self, message: str, *, status: int | None = None, reason: str | None = None,
                 detail: str | None = None):
        super().__init__(message)
        self.message = message
        if status is not None:
            self.status = status
        if reason is not None:
            self.reason = reason
        self.detail = detail or message


class StoreError(FastwebhookError):
    """The store could not do what was asked (unreachable, locked, corrupt)."""


class ConstraintError(StoreError):
    """A write a collection's constraints refuse (a unique field already taken)."""
