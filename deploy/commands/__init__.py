"""The operator commands of each service (``refnet agency``, ``refnet keys ...``, ``refnet audit ...``, ...):
HTTP clients of the running services, or direct work on a service's database where no API exists. Each module
has ``register(app, keys)``; ``deploy/launcher/cli.py`` loads them only when one of their commands is asked for."""
