"""Renderers: they format result objects and never compute numbers."""
