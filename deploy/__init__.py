"""Running RefNet: the local stack launcher (``refnet``) and the production manifests."""
