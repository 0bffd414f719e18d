"""The one exception type for mistakes a user can make and fix, and how a simple command ends on it."""

import sys
from collections.abc import Iterator, Sequence
from contextlib import contextmanager


class CxrError(Exception):
    """Bad input: the message names the file, row or option and says what to do."""


class DivergedError(CxrError):
    """Training produced a NaN or infinite loss."""


class SplitMismatch(CxrError):
    """A saved split no longer matches the dataset: images new, gone or changed since it was made. `new`: the
    data's images (relpaths) the split does not list; `gone`: the split's images the data does not hold (both
    empty where images changed otherwise)."""

    def __init__(self, message: str, new: Sequence[str] = (), gone: Sequence[str] = ()):
        super().__init__(message)
        self.new, self.gone = list(new), list(gone)


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
