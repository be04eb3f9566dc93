"""`streamd keepup`: does the daemon keep up with a steady stream while it summarizes?

`streamd run` as a real process (../testing.py), real log lines fed through `streamd send`
at a steady rate (feeder.py), its status sampled (sampling.py), the checks (verdict.py), the
report (report.py), the timeline (runner.py). No torch: the model is in the daemon.
"""
