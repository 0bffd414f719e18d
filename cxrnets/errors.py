"""The one exception type for mistakes a user can make and fix."""


class CxrError(Exception):
    """Bad input: the message names the file, row or option and says what to do."""


class DivergedError(CxrError):
    """Training produced a NaN or infinite loss."""
