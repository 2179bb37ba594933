"""Blob stores: where the bytes of layers and configs live."""
