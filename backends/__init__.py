"""sparsec.backends"""
