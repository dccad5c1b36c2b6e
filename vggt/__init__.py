"""VGGT: feed-forward cameras, depth, point maps and tracks from one to hundreds of images.

    import vggt
    model = vggt.VGGT.from_pretrained("facebook/VGGT-1B")
    rec = vggt.reconstruct("photos/", model=model)

Names are imported on first use (see `vggt.utils.lazy`), so that `import vggt` stays cheap.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from vggt.utils.lazy import lazy_attributes
from vggt.version import __version__

if TYPE_CHECKING:
    from vggt.models.config import VGGTConfig, get_preset
    from vggt.models.vggt import VGGT
    from vggt.pipeline.api import reconstruct
    from vggt.pipeline.reconstruction import Reconstruction

_ORIGINS = {
    "VGGT": "vggt.models.vggt",
    "VGGTConfig": "vggt.models.config",
    "get_preset": "vggt.models.config",
    "reconstruct": "vggt.pipeline.api",
    "Reconstruction": "vggt.pipeline.reconstruction",
}
__getattr__, __dir__ = lazy_attributes(__name__, _ORIGINS)
__all__ = ["Reconstruction", "VGGT", "VGGTConfig", "__version__", "get_preset", "reconstruct"]
