"""intake: Cases, consent, and the personal data that only the right agency may read."""
