"""Validation of a trained model: its serving signatures against the contract, and the quality gate."""
