"""HTTP: the Altcraft-compatible API and everything that knows about HTTP."""
