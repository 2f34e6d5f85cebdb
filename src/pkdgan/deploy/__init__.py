"""Deployment: a fitted model scored anywhere, fast, and always as PyTorch scores it.

``backends`` is the table of scoring backends (PyTorch, ONNX Runtime, OpenVINO, the generated C
kernels of ``native``); ``writers`` exports a generator for each, ``build`` makes a run's deploy
cache and checks each export's ``parity`` with PyTorch, ``cache`` reads it back without torch,
``lean`` is ``pkdgan predict`` on it, ``load`` attaches a backend to a detector, ``export_run``
is ``pkdgan export``, ``bench`` measures them all. ``dense`` and ``polyphase`` are the graph forms
OpenVINO runs fastest. Nothing below this layer imports it.
"""
