"""The ``cronmesh`` command: ``main`` parses and maps errors once; each command module adds its
commands; ``client``, ``output`` and ``documents`` are what they share."""
