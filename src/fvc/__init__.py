"""fvc: K-fold training of real/fake video classifiers that survives crashes, OOM and time limits.

The package holds all logic; the Snakemake rule scripts under ``workflow/scripts`` only unpack
``snakemake.*`` and call one function from here.
"""

__version__ = "0.1.0"
