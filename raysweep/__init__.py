"""raysweep: segmentation losses, measured.

The package is layered (see DESIGN.md in the shared folder): ``losses``, ``data`` and ``metrics`` know nothing of Ray,
Optuna, Parquet or HTML; the sweep and the report sit on top of them.
"""

__version__ = "0.1.0"
