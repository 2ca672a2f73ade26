"""The operator console: a read-only web page over the risk-events and snapshots topics."""
