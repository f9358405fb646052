"""Small test doubles shared by several test files."""

from __future__ import annotations


class CountingLoader:
    """A model loader that counts how often it was asked for the model (0 calls = everything was reused)."""

    def __init__(self, model):
        self.model, self.calls = model, 0

    def __call__(self):
        self.calls += 1
        return self.model
