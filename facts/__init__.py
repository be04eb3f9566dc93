"""streamd.facts: exact facts mined from the stream, and claims checked against them.

Pure Python: never torch, never asyncio. The session feeds it lines and asks
for the facts of a span; the summary's claims are checked against those facts
and the text the model saw.
"""
