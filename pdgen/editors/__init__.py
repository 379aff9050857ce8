"""Editors: turn an image and a step goal into the next image (`Editor` protocol; the world back end)."""
