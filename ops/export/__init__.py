"""Export of training data from the capture store: de-identification, patient splits, filters, dedup, check.

Pure logic only (no model, no store I/O); ``ops.export.run`` streams records through it and
renders prompts with ``model.inference.prompts``.
"""
