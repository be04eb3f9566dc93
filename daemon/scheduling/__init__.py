"""Scheduling: the engine thread, which summary runs when, the share of engine time."""
