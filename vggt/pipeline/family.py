"""The forward pass of the models other than VGGT (VGGT-Omega, Pi3, Pi3X) in the pipeline, and their geometry.

In the pipeline these models run their streaming pass (`vggt.runtime.pi3_engine`, `vggt.runtime.omega_engine`: the
numbers of their reference forward pass, in chunks, with offload and the fast mode's token merging) with the engine
of `InferenceOptions` (the automatic one unless chosen); Pi3X conditioned on known poses runs its reference forward
pass in one piece, and `engine_notice` says in one line which streaming options it did not apply. Their outputs
become the pipeline's cameras, depth and points through `vggt.models.family_outputs.to_geometry`: the first camera
is the world frame for every model (Pi3 and Pi3X, which have no reference frame, are re-expressed in their first
camera's frame). They have no track head.

Conditioning (`FamilyConditioning`): Pi3X takes known intrinsics, depth and camera poses into its network; the
other models take none (the pipeline then replaces their predictions with what is known, as for VGGT).
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import torch
from torch import Tensor, nn

from vggt.errors import InputError
from vggt.models.family_outputs import to_geometry

if TYPE_CHECKING:
    from vggt.runtime.engine import StreamingEngine

logger = logging.getLogger(__name__)

# Pi3X's pixel coordinates put the top-left pixel's centre at (0.5, 0.5); this package's at (0, 0).
PI3X_PIXEL_CENTRE_OFFSET = 0.5

ENGINE_NOTICE = (
    "%s conditioned on known poses runs its reference forward pass in one piece, in one process: %s are ignored"
)


@dataclass(frozen=True)
class FamilyConditioning:
    """What is known about a scene of S frames on the model's input grid of H x W pixels.

    intrinsics: [S, 3, 3] pinhole, pixels; depth: [S, H, W] (0 where unknown); poses: [S, 4, 4] OpenCV
    camera-to-world in any world frame and unit (NaN for a frame without a pose). Each may be None.
    """

    intrinsics: Tensor | None = None
    depth: Tensor | None = None
    poses: Tensor | None = None

    @property
    def names(self) -> list[str]:
        return [name for name in ("intrinsics", "depth", "poses") if getattr(self, name) is not None]


def takes_conditioning(model: nn.Module) -> bool:
    """Whether `model`'s network reads known intrinsics, depth and poses (Pi3X)."""
    from vggt.models.pi3x import Pi3X

    return isinstance(model, Pi3X)


def engine_notice(label: str, asked: list[str]) -> None:
    """One warning line naming the streaming-engine options a user asked for that a run of Pi3X conditioned on
    known poses ignores (its pose injection runs in the reference forward pass only)."""
    if asked:
        logger.warning(ENGINE_NOTICE, label, ", ".join(asked))


def conditioning_tensors(model: nn.Module, conditioning: FamilyConditioning | None) -> dict[str, Tensor]:
    """The known quantities `model` reads, as its forward's keyword arguments with a batch axis ([1, S, ...]);
    InputError for a model that reads none."""
    if conditioning is None or not conditioning.names:
        return {}
    if not takes_conditioning(model):
        raise InputError(
            "{model} does not take {inputs} into its network; use --model pi3x for conditioning",
            model=type(model).__name__,
            inputs=conditioning.names,
        )
    return {name: getattr(conditioning, name)[None] for name in conditioning.names}


def family_forward(
    model: nn.Module,
    inputs: Tensor,
    conditioning: FamilyConditioning | None = None,
    engine: StreamingEngine | None = None,
) -> dict[str, Tensor]:
    """`model`'s reference outputs on inputs [1, S, 3, H, W] in [0, 1] (with `conditioning` for Pi3X).

    With `engine`, computed by the streaming pass (`vggt.runtime.pi3_engine`, `vggt.runtime.omega_engine`: chunk
    sizes and offload as it says, the same numbers; its `merge_ratio` the fast mode), the inputs moved to the
    device one frame chunk at a time; Pi3X conditioned on known poses runs its reference forward pass.
    """
    device = next(model.parameters()).device
    extra = {name: value.to(device) for name, value in conditioning_tensors(model, conditioning).items()}
    if engine is None or "poses" in extra:
        return model(inputs.to(device), **extra)
    from vggt.models.pi3 import Pi3
    from vggt.models.vggt_omega import VGGTOmega
    from vggt.runtime.omega_engine import run_omega
    from vggt.runtime.pi3_engine import run_pi3

    if isinstance(model, Pi3):
        return run_pi3(model, inputs, engine, **extra)
    if isinstance(model, VGGTOmega):
        return run_omega(model, inputs, engine)
    return model(inputs.to(device), **extra)


def family_geometry(outputs: dict[str, Tensor], image_hw: tuple[int, int]) -> dict[str, Tensor]:
    """Cameras, depth and points (`to_geometry`'s keys, batch axis first, float32) of `family_forward`'s outputs
    on images of `image_hw`, plus `metric_scale` [B] for a model that predicts one (Pi3X)."""
    outputs = {key: value.float() for key, value in outputs.items() if isinstance(value, Tensor)}
    geometry = to_geometry(outputs, image_hw)
    if "metric" in outputs:
        geometry["metric_scale"] = outputs["metric"]
    return geometry


def read_known_depth(folder: str | Path, paths: Sequence[Path], transforms: Sequence[Any]) -> Tensor:
    """Known depth of each photo, `folder/<photo stem>.npy` (float32 [height, width] at the photo's size, 0 or
    non-finite where unknown; a photo without a file is all unknown), resampled (nearest) onto the model's input
    grid with the photo's `PreprocessTransform` -> [S, H, W] (0: unknown)."""
    import cv2

    folder = Path(folder)
    if not folder.is_dir():
        raise InputError("{depth} must be a folder of <photo name>.npy depth maps, got {path}", path=folder)
    width, height = transforms[0].input_size
    maps = []
    for path, transform in zip(paths, transforms):
        file = folder / f"{path.stem}.npy"
        if not file.is_file():
            maps.append(np.zeros((height, width), np.float32))
            continue
        depth = np.load(file, allow_pickle=False)
        if depth.ndim != 2 or depth.shape[::-1] != tuple(transform.original_size):
            raise InputError(
                "{depth}: {file} holds an array of shape {shape}; expected the photo's {size} (height, width)",
                file=file,
                shape=depth.shape,
                size=tuple(transform.original_size[::-1]),
            )
        depth = np.where(np.isfinite(depth) & (depth > 0), depth, 0).astype(np.float32)
        affine = transform.matrix()[:2].astype(np.float64)
        maps.append(cv2.warpAffine(depth, affine, (width, height), flags=cv2.INTER_NEAREST, borderValue=0))
    return torch.from_numpy(np.stack(maps))


def conditioning_inputs(
    known_intrinsics: np.ndarray | None, depth: Tensor | None, input_hw: tuple[int, int]
) -> FamilyConditioning:
    """Pi3X's conditioning from known intrinsics [S, 3, 3] on the model's input grid in this package's convention
    (the top-left pixel's centre at (0, 0)) and known depth [S, H, W]: Pi3X numbers pixel centres from 0.5, so
    its principal point is half a pixel further."""
    intrinsics = None
    if known_intrinsics is not None:
        intrinsics = torch.as_tensor(np.asarray(known_intrinsics), dtype=torch.float32).clone()
        intrinsics[:, :2, 2] += PI3X_PIXEL_CENTRE_OFFSET
    if depth is not None and tuple(depth.shape[-2:]) != tuple(input_hw):
        raise ValueError(f"depth of {tuple(depth.shape[-2:])} for inputs of {input_hw}")
    return FamilyConditioning(intrinsics, depth)
