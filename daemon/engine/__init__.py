"""The model session and everything that touches torch: loading, framing the stream,
ingest with its retry, guided summaries; run on one engine thread (thread.py)."""
