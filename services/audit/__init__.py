"""Audit log service: an append-only, tamper-evident log of protection-agency actions."""
