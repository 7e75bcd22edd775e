"""Errors that say what went wrong and what to do about it."""


class MlopsError(Exception):
    """A user-facing failure. `str(err)` is one line: the problem, then the fix in parentheses."""

    def __init__(self, problem: str, fix: str):
        super().__init__(f"{problem} ({fix})")
        self.problem = problem
        self.fix = fix


class ConfigError(MlopsError):
    """The configuration cannot work; nothing was run."""


class DataError(MlopsError):
    """The input data cannot be used; nothing downstream was run."""
