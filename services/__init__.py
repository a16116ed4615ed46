"""The four RefNet services; each owns its database and speaks to the others by events."""
