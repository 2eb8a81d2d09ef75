"""The model registry: its on-disk format (store), policy, publish, TF Serving's models.config,
approvals, rebuild, the CLI and the Models page.
"""
