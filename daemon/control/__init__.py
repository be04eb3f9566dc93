"""The control socket: protocol (the wire format), server (the ROUTER), handlers (the
daemon's answers), status, feed (`summaries`), and client (ControlClient, the CLI commands).
Nothing is imported here, so that the CLI's client stays light."""
