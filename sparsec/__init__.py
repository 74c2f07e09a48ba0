"""sparsec: a sparse deep-learning compiler and sparse-accelerator simulator."""

__version__ = "0.1.0"


def load(path):
    """Load a compiled artifact (checks every file's sha256); returns a callable model."""
    from sparsec.backends.artifact import load_artifact

    return load_artifact(path)


def compile(model, example_inputs=None, **options):
    """Compile a model file path or an nn.Module; see `sparsec.api.compile`."""
    from sparsec.api import compile as _compile

    return _compile(model, example_inputs, **options)


def compile_dispatch(model, inputs_list=None, **options):
    """Compile one variant per example-input tuple, dispatched by input shape; see docs/dispatch.md."""
    from sparsec.backends.dispatch import compile_dispatch as _compile_dispatch

    return _compile_dispatch(model, inputs_list, **options)
