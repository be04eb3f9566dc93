"""`streamd bench`: the HF dense baseline against streamd, one process, one device, same tokens.

runner.py runs both sides (baseline.py, streamd_side.py) on the models of models.py,
timed and measured with device.py (CUDA memory on a GPU, the process's RSS on a CPU);
report.py holds and renders the numbers. llama_cpp.py sets llama.cpp's llama-bench
beside them on a CPU; flags.py holds the command's options.
"""
