"""The public Python API: sklearn/PyOD-style detectors and reading run folders back as detectors.

``EDEGAN().fit(X)`` trains the teacher, ``PKDGAN(teacher=...).fit(X)`` distils a small student,
``load(run_dir)`` reads any run folder the CLI or ``save`` wrote, scored by the fastest
parity-checked backend (``use_backend``). The classes live in ``pkdgan.inference``, loading with
backends in ``pkdgan.deploy``; this module is the stable place to import them from.
"""

from pkdgan.deploy.backends import names as backend_names
from pkdgan.deploy.load import load, use_backend
from pkdgan.inference.detector import OneClassDetector, holdout_split
from pkdgan.inference.estimators import EDEGAN, PKDGAN

__all__ = ["EDEGAN", "PKDGAN", "OneClassDetector", "backend_names", "holdout_split", "load", "use_backend"]
