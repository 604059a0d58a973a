"""User-facing errors: one line, naming the input and what was expected.

The CLI prints these without a traceback; anything else is a bug and keeps its traceback.
"""


class PrimiaError(Exception):
    """Base for errors caused by input or environment, not by a bug."""


class ConfigError(PrimiaError):
    """A configuration value is missing or invalid."""


class DataError(PrimiaError):
    """A data source is missing, unreadable or inconsistent."""


class StoreError(PrimiaError):
    """The object store refused or lost an operation."""


class StackError(PrimiaError):
    """The local stack could not be started, reached or stopped."""


class IntegrityError(StoreError):
    """A stored object failed verification (hash, signature or authentication tag)."""


class RoundFailedError(PrimiaError):
    """A round ended with fewer accepted updates than the quorum; nothing was committed for it."""


class PrivacyError(PrimiaError):
    """Training would break a privacy guarantee (a budget spent, an account missing or not this party's)."""


class BudgetSpentError(PrivacyError):
    """The next round would pass the privacy budget: it is not run and training stops cleanly."""
