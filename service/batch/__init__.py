"""Batch scoring and features for whole data folders, beside the engine they run (one process, or Dask):
chunks.py (pieces of whole enterprises), features.py, score.py, distributed.py; requests.py builds example
API requests from a folder."""
