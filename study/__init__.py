"""Ray Tune orchestration of cxrnets studies."""
