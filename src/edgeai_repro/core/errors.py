"""One error type for every bad input the user can fix, and one sentence for values refused at composition."""

import re


class ConfigError(ValueError):
    """An impossible or unknown setting, or a corrupt input file.

    The message is one sentence that names the offending key (or file) and the fix; the launcher
    prints it without a traceback and exits non-zero before any result is written.
    """


def require(condition: bool, message: str) -> None:
    """Raise ConfigError(message) unless condition holds."""
    if not condition:
        raise ConfigError(message)


def composition_message(exc: BaseException) -> str | None:
    """One sentence for a value refused while the config is composed (an option outside its set, a
    string where a number goes), naming the key and the fix; None for any other error."""
    from omegaconf.errors import OmegaConfBaseException

    cause = exc if isinstance(exc, OmegaConfBaseException) else exc.__cause__
    if not isinstance(cause, OmegaConfBaseException):
        return None
    key = getattr(cause, "full_key", None) or "the config"
    text = str(cause).splitlines()[0].rstrip(".")
    choices = re.search(r"expected one of \[(.*)\]", text)
    if choices:
        value = re.search(r"Invalid value '([^']*)'", text)
        shown = f"={value.group(1)!r}" if value else ""
        return f"{key}{shown} is not an option; use one of: {choices.group(1)}."
    if re.search(r"Key '[^']*' not in '", text):
        if key in RETIRED:
            return f"{key} was removed: {RETIRED[key]}; drop the override."
        return f"{key} is not a setting; drop it or check its spelling (`--cfg job` lists the settings)."
    return f"{key}: {text[0].lower() + text[1:]}; fix the value of {key}."


# Settings that existed once, with what replaced them, so an old command line gets told why.
RETIRED = {
    "deepfusion.data.public_answers": (
        "the server's public data is always labelled and states no test fact (docs/deepfusion.md, issue 21)"
    ),
}
