"""User-facing errors. The CLI turns these into a one-line message and exit code 2."""


class MobilemedError(Exception):
    """Bad input the user can fix: the message names the file or field and says how to fix it."""


class MissingExtraError(MobilemedError):
    """An optional dependency is not installed; the message carries the exact pip line."""

    def __init__(self, package: str, extra: str, purpose: str):
        super().__init__(
            f"{purpose} needs the '{package}' package: pip install 'mobilemed[{extra}]'"
        )
