"""Supervisor: a Linux-native process supervisor daemon."""

__version__ = "0.1.0"
