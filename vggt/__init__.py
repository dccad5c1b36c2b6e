"""VGGT: feed-forward cameras, depth, point maps and tracks from one to hundreds of images."""

__version__ = "0.1.0"
