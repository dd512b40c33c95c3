"""The errors fercore raises for bad input: one line naming the key, file or line at fault."""
import contextlib


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


@contextlib.contextmanager
def collected_notices():
    """Collect the notices raised inside into the yielded list (each text once, in order) instead of
    showing them, for a caller that says them its own way (a sweep: with the cell's name, in the
    parent process); any other warning is shown as it came."""
    import warnings

    said: list[str] = []
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always", Notice)
        try:
            yield said
        finally:
            said += dict.fromkeys(str(w.message) for w in caught if issubclass(w.category, Notice))
    for w in caught:
        if not issubclass(w.category, Notice):
            warnings.warn_explicit(w.message, w.category, w.filename, w.lineno)


def _format_warning(message, category, filename, lineno, line=None, _library=None):
    """A `Notice` reads as the CLI prints it, `fercore: notice: ...`, wherever Python shows it (a
    notebook, a sweep worker, a script); any other warning keeps Python's format."""
    if isinstance(category, type) and issubclass(category, Notice):
        return f"fercore: notice: {message}\n"
    return _library(message, category, filename, lineno, line)


def install_notice_format() -> None:
    """Called once on `import fercore`."""
    import functools
    import warnings

    if getattr(warnings.formatwarning, "_fercore", False):
        return
    fmt = functools.partial(_format_warning, _library=warnings.formatwarning)
    fmt._fercore = True
    warnings.formatwarning = fmt
