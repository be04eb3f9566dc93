"""streamd: one continuous LLM session over an endless text stream, at constant memory.

The code lives in sub-packages installed from the top-level folders of the
repository: streamd.cache (cache/), streamd.connectors (connectors/), streamd.facts
(facts/) and streamd.daemon (daemon/); streamd.errors holds the ConfigError they share.
"""

__version__ = "0.1.0"
