"""sparsec.sim"""
