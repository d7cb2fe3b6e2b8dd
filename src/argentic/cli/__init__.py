"""The ``argentic`` command line."""
