"""The model session and everything that touches torch: loading, framing the stream,
ingest with its retry, guided summaries; called on the one engine thread (scheduler.py)."""
