"""`streamd soak`: run the daemon for a bounded time under faults and reconcile every message.

The soak starts its own Mosquitto (broker.py) and its own `streamd run`
(daemon_process.py), feeds both transports from several sender threads with a
mix of good and malformed input (payloads.py, senders.py), restarts the broker
and SIGKILLs the daemon on a schedule (runner.py), samples the daemon's memory
(monitor.py), and checks that what was sent, received, ingested, dropped and
rejected adds up (reconcile.py) before printing the table (report.py).

This package never imports torch: the model lives in the daemon subprocess.
"""
