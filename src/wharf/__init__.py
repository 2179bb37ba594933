"""Wharf: a container image registry where deleting frees space and never corrupts an image."""

__version__ = "0.1.0"
