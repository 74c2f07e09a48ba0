"""sparsec.ir"""
