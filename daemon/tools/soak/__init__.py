"""`streamd soak`: run the daemon for a bounded time under faults and reconcile every message.

Mosquitto and `streamd run` (broker.py, ../testing.py), senders (payloads.py, senders.py),
the fault schedule (runner.py), memory (monitor.py), each run's counters (daemon_runs.py),
checks (reconcile.py, verdict.py), the table (report.py). No torch: the model is in the daemon.
"""
