"""Hydra plugin package (Hydra only instantiates sweepers that live under hydra_plugins)."""
