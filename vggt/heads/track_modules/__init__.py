"""The track head's iterative point tracker and its building blocks."""

from vggt.heads.track_modules.tracker import TrackerPredictor

__all__ = ["TrackerPredictor"]
