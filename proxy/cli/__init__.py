"""The farebox command."""
