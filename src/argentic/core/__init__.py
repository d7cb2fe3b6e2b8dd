"""Import paths kept from earlier argentic releases; the code lives in the top-level packages."""
