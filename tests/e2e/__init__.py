"""End to end across packages: from the hot folder to the centre with real parts."""
