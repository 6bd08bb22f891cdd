"""Subcommands of the ``xrlkit`` CLI, one module each (see :mod:`xrlkit.cli`)."""
