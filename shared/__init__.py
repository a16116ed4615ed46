"""Cross-cutting code every RefNet service stands on: one way to do each thing."""
