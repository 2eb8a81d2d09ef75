"""The SavedModel: export with SavedModelBuilder, warmup requests, the check of the shipped
artifact, and file-level completeness (no TensorFlow).
"""
