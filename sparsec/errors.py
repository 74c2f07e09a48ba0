"""Re-export of the error family (defined in the lowest layer, `sparsec.ir`)."""
from sparsec.ir.errors import (  # noqa: F401
    ConfigError, FormatError, ModelError, ParameterError, PatternError,
    SerializationError, SparsecError,
)
