"""streamd: one continuous LLM session over an endless text stream, at constant memory.

The code lives in three sub-packages, installed from the top-level folders of
the repository: streamd.cache (cache/), streamd.connectors (connectors/) and
streamd.daemon (daemon/).
"""

__version__ = "0.1.0"
