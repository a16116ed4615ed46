"""Programs an integrator copies: they use RefNet's public interfaces only, never its packages."""
