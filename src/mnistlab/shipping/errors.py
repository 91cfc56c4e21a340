"""Errors of the shipping stage that carry an HTTP status for the API."""

from __future__ import annotations

from mnistlab.errors import MnistlabError


class InputError(MnistlabError, ValueError):
    """Bad input to a prediction: not an image, too large, wrong shape, out-of-range values.

    ``status`` is the HTTP status the API answers with (4xx) and ``code`` a short machine-readable
    name (e.g. ``"not_an_image"``); the command line prints ``message`` and ``hint`` as usual.
    """

    def __init__(
        self, message: str, hint: str | None = None, *, status: int = 422, code: str = "invalid"
    ) -> None:
        super().__init__(message, hint)
        self.status = status
        self.code = code
