"""The scoring graph as generated C for small generators: ``plan`` (torch side) turns a generator
into a ``form.Plan``, ``source`` writes it as C (``block``: a batch kernel over image lanes,
``single``: a one-image kernel), ``runner`` compiles, parity-checks and runs it without torch."""
