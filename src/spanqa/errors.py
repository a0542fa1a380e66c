"""Errors that mean "the user asked for something that cannot work", reported as one line without a traceback."""


class SpanQAError(Exception):
    """Base class: the entry points print `error: <message>` and exit with status 2."""


class ConfigError(SpanQAError):
    """A config value is unknown, mistyped or impossible."""


class DataError(SpanQAError):
    """Input data is missing, malformed or empty."""


class ModelLoadError(SpanQAError):
    """A checkpoint cannot be found or loaded."""


class TrainingError(SpanQAError):
    """Training cannot go on: the loss or the model's outputs stopped being finite."""
