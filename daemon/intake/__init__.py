"""Intake: decode and limit what sources hand over, spool it, queue it for the engine."""
