"""The reference case system (``case_system.py``); a package only so that mypy and the tests can reach it."""
