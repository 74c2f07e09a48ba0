"""sparsec.frontends: model loading, fx -> IR lowering, the torch.compile backend."""
from sparsec.frontends.load import capture, import_model, import_module, load_model  # noqa: F401
