"""sparsec.frontends"""
