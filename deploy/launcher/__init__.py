"""The ``refnet`` command: start the local stack, run migrations, seed, and operate it."""
