"""Model builders of the example pipelines (include/pipelines/): templates for your own."""
