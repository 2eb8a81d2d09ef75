"""Storage: local paths and object-store buckets (gs://, s3://) behind one set of functions.

- include/storage/location.py: what a location is (`BucketURI`, `location`, `join`, schemes known);
- include/storage/connections.py: which credentials open a bucket (an Airflow connection or the
  provider's default chain);
- include/storage/objects.py: object reads and conditional writes, verified uploads, the lease;
- include/storage/paths.py: one path API over both (what the registry and the run record use).
"""
