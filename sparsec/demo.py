"""`make demo`: the main job on a bundled example.

Until the compiler lands this is the formats demo: a random 768x3072 weight
pruned to several patterns, packed, and compared with dense.
"""
import sys

from sparsec.cli import main

if __name__ == "__main__":
    sys.exit(main(["formats", "--rows", "768", "--cols", "3072"]))
