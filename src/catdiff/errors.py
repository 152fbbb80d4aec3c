"""Exception types that the command line turns into one-line messages and a non-zero exit."""


class CatdiffError(Exception):
    """Any user-facing error: the message is printed as is, on one line."""


class ConfigError(CatdiffError, ValueError):
    """A bad config key or value; the message names the key."""


class CheckpointError(CatdiffError):
    """A missing, corrupt or mismatched checkpoint."""


class DataError(CatdiffError):
    """Missing or unusable data (path, vocabulary, hub access)."""


class MissingExtra(CatdiffError, ImportError):
    """An optional dependency is not installed; the message names the extra to install."""


class TrainingError(CatdiffError):
    """Training cannot go on (e.g. a non-finite loss)."""
