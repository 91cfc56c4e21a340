"""The exceptions mnistlab raises on bad input or failed work.

Every error says what was wrong, where, and (in ``hint``) how to fix it. The command line
prints ``message`` and ``hint`` without a traceback.
"""

from __future__ import annotations


class MnistlabError(Exception):
    """Base class: a user-facing error with an optional hint on how to fix it."""

    def __init__(self, message: str, hint: str | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.hint = hint

    def __str__(self) -> str:
        return self.message if not self.hint else f"{self.message}\nHint: {self.hint}"


def unknown_name(
    what: str, name: str, known: list[str] | tuple[str, ...], *, likely: str | None = None
) -> MnistlabError:
    """``unknown WHAT 'NAME'`` with a did-you-mean (``likely`` when the caller knows better,
    else the closest spelling: ``resnet_small`` -> ``resnet-small``) and the known names in
    the hint."""
    import difflib

    normal = {k.replace("_", "-").lower(): k for k in known}
    close = difflib.get_close_matches(name.replace("_", "-").lower(), list(normal), n=1)
    likely = likely or (normal[close[0]] if close else None)
    guess = f"did you mean {likely!r}? " if likely else ""
    return MnistlabError(
        f"unknown {what} {name!r}", hint=f"{guess}choose one of: {', '.join(known)}"
    )


class DatasetNotFoundError(MnistlabError, KeyError):
    """The dataset name is neither registered nor imported."""

    def __str__(self) -> str:  # KeyError would repr() the message
        return MnistlabError.__str__(self)


class DatasetNotCachedError(MnistlabError):
    """The dataset is known but not in the cache, and downloading was not allowed."""


class DatasetFormatError(MnistlabError, ValueError):
    """A data file is malformed: bad IDX header, truncated data, labels out of range, ..."""


class ChecksumError(MnistlabError):
    """Downloaded or cached bytes do not match the registry's size or SHA-256."""


class DownloadError(MnistlabError):
    """Every mirror failed for a file; ``failures`` lists (url, reason) per mirror."""

    def __init__(
        self, message: str, hint: str | None = None, failures: list[tuple[str, str]] | None = None
    ) -> None:
        super().__init__(message, hint)
        self.failures = failures or []


class ImportDataError(MnistlabError, ValueError):
    """Files given to ``import_dataset`` cannot be imported (format, shape, values)."""


class OverwriteError(MnistlabError, FileExistsError):
    """The operation would overwrite something the user made, and was not asked to."""
