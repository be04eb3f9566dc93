"""`streamd bench`: the HF dense baseline against streamd, one process, one device, same tokens.

runner.py runs both sides (baseline.py, streamd_side.py) on a model from models.py,
timed and measured with device.py; report.py holds and renders the numbers.
"""
