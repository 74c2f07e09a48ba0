"""The one family of errors sparsec raises on purpose.

Every message names what was wrong and where (parameter, shape, index, node,
layer, file). The CLI turns a SparsecError into one line and exit status 1;
anything else escaping is a bug in sparsec.
"""


class SparsecError(Exception):
    """Base class: a user-facing error with a message that says what and where."""


class FormatError(SparsecError):
    """A tensor does not fit a format, or a format's buffers break an invariant."""


class PatternError(FormatError):
    """A dense tensor's zeros do not follow the requested sparsity pattern."""


class ParameterError(SparsecError, ValueError):
    """A parameter (of a format, a pass, a config, a CLI flag) is out of range."""


class SerializationError(SparsecError):
    """A serialised value (header, arrays, artifact file) is malformed."""


class ModelError(SparsecError):
    """A model file or graph cannot be loaded, lowered or verified."""


class ConfigError(SparsecError):
    """A configuration file (simulator, sparsity spec) is malformed."""
