"""The one exception type for mistakes a user can make and fix, and how a simple command ends on it."""

import sys
from collections.abc import Iterator
from contextlib import contextmanager


class CxrError(Exception):
    """Bad input: the message names the file, row or option and says what to do."""


class DivergedError(CxrError):
    """Training produced a NaN or infinite loss."""


class SplitMismatch(CxrError):
    """A saved split no longer matches the dataset: images new, gone or changed since it was made. `new`: how many
    of the data's images the split does not list; `gone`: how many of the split's images the data does not hold
    (both 0 where images changed otherwise)."""

    def __init__(self, message: str, new: int = 0, gone: int = 0):
        super().__init__(message)
        self.new, self.gone = new, gone


@contextmanager
def command_ends(interrupted: str) -> Iterator[None]:
    """The body of a command's main: a CxrError ends it with "error: ..." (status 1), Ctrl-C with
    "interrupted: <interrupted>" (status 130, as a shell reports a command stopped by Ctrl-C)."""
    try:
        yield
    except CxrError as error:
        raise SystemExit(f"error: {error}") from None
    except KeyboardInterrupt:
        print(f"interrupted: {interrupted}", file=sys.stderr)
        raise SystemExit(130) from None
