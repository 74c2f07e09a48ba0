"""One module per CLI sub-command; see sparsec/cli.py."""
