"""Service-oriented adaptive hierarchical incentive mechanism for FL (arXiv 2509.10512):
Stackelberg stage 1, the LMO-worker multi-agent environment, MADDPG, ASOSA and baselines.
Depends on edgeai_repro.core only."""
