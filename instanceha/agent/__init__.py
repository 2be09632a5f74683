"""instanceha-agent: one per compute node, heartbeats through the coordinator."""
