"""fvc: K-fold training of real/fake video classifiers that survives crashes, OOM and time limits.

The package holds all logic; the Snakemake rule scripts under ``workflow/scripts`` only unpack
``snakemake.*`` and call one function from here.
"""

__version__ = "0.1.0"

#: Label convention used everywhere in the package: 1 = positive class (``fake`` by default).
POSITIVE = 1
NEGATIVE = 0
