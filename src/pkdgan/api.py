"""The public Python API: sklearn/PyOD-style detectors and reading run folders back as detectors.

``EDEGAN().fit(X)`` trains the teacher, ``PKDGAN(teacher=...).fit(X)`` distils a small student,
``load(run_dir)`` reads any run folder the CLI or ``save`` wrote. The classes live in
``pkdgan.inference``; this module is the stable place to import them from.
"""

from pkdgan.inference.detector import OneClassDetector, holdout_split
from pkdgan.inference.estimators import EDEGAN, PKDGAN
from pkdgan.inference.loading import load, use_backend

__all__ = ["EDEGAN", "PKDGAN", "OneClassDetector", "holdout_split", "load", "use_backend"]
