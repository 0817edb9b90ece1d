"""Decoding algorithms over the model backend interface, and the engine that runs a request."""
