"""Captioners (senders) and retrievers (receivers)."""
