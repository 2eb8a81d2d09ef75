"""One run on its record: trigger options, the record, preflight, and the steps that run on it."""
