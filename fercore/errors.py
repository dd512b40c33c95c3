"""The errors fercore raises for bad input: one line naming the key, file or line at fault."""


class ConfigError(ValueError):
    """A config problem: unknown key, wrong type, unknown profile or method."""


class DataError(ValueError):
    """A dataset problem: missing folder or file, bad label line, corrupt image, empty split."""


class NonFiniteLossError(RuntimeError):
    """Training produced a NaN or infinite loss; the last good checkpoint is kept."""


class RunError(ConfigError):
    """A run directory problem: damaged or missing files, an unfinished run, a folder fercore did not make."""


class Notice(UserWarning):
    """Something the user should know that does not stop the command: an unfinished run used, a
    damaged cache entry rebuilt, a run not reused. The CLI prints each as one `fercore: notice:` line."""


def notice(message: str) -> None:
    """Emit a `Notice` (one line on the CLI; a warning in a notebook)."""
    import warnings

    warnings.warn(message, Notice, stacklevel=2)
