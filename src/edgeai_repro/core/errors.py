"""One error type for every bad input the user can fix."""


class ConfigError(ValueError):
    """An impossible or unknown setting, or a corrupt input file.

    The message is one sentence that names the offending key (or file) and the fix; the launcher
    prints it without a traceback and exits non-zero before any result is written.
    """


def require(condition: bool, message: str) -> None:
    """Raise ConfigError(message) unless condition holds."""
    if not condition:
        raise ConfigError(message)
