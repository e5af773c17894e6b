"""Loyalty Engine: a self-hosted loyalty-program engine speaking the Altcraft Loyalty API v1.1."""

__version__ = "0.1.0"
