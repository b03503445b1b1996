"""Nexus: a Django + Channels server for realtime AI agent chat."""

__version__ = "0.1.0"
