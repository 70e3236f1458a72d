"""The sweep as a standalone script, for ``ray submit``::

    ray submit cluster/cluster.yaml raysweep/run.py -- --config configs/synapse.yaml --out /shared/raysweep

It takes the same arguments as ``raysweep run`` (see ``raysweep run --help``); on a cluster it connects with
``--address auto`` unless told otherwise.
"""

from __future__ import annotations

import os
import sys

if __name__ == "__main__" and __package__ in (None, ""):
    # Run as a file (ray submit copies it alone): import the installed package, not this folder's siblings.
    sys.path = [p for p in sys.path if os.path.abspath(p) != os.path.dirname(os.path.abspath(__file__))]

from raysweep.cli import main  # noqa: E402

if __name__ == "__main__":
    argv = sys.argv[1:]
    if "--address" not in argv and os.path.exists("/tmp/ray/ray_current_cluster"):
        argv += ["--address", "auto"]  # submitted to a running cluster: join it rather than starting a local one
    sys.exit(main(["run", *argv]))
