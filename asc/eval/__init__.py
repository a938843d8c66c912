"""Evaluation: DCASE metrics and the paper's angle measures, run reports and BN-vs-L2BN comparison."""
