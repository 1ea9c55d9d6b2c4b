"""AERIA (arXiv 2503.04521), reconstructed from its abstract: multi-exit workloads, market,
mechanisms, simulator and property checks. Depends on edgeai_repro.core only."""
