"""Train the small Pi3X preset (`pi3x-tiny`) to read its intrinsics conditioning, for the conditioning test.

    python scripts/train_pi3x_tiny_rays.py tests/data/pi3x_tiny_rays.safetensors

Synthetic scenes: random images (which say nothing about the camera) seen by pinhole cameras of random focal
lengths; the loss is the L1 error of the predicted viewing-ray slopes (x / z, y / z of the local points) against
the true ones. The intrinsics are given to the network on every other step, so the model learns both to use them
and to guess without them (it can then only predict an average focal length). The weights are written in
float16 under Pi3X's published key names (a few minutes on 2 CPU cores).
"""

from __future__ import annotations

import argparse
import time
from dataclasses import dataclass

import torch
from safetensors.torch import save_file

from vggt.models.registry import create_model


@dataclass(frozen=True)
class RaySceneConfig:
    """Sizes of the synthetic scenes and of the training run."""

    side: int = 42  # 3 x 3 patches of 14 pixels
    frames: int = 2
    batch: int = 4
    min_focal_ratio: float = 0.5  # focal length / image side
    max_focal_ratio: float = 2.0
    steps: int = 300
    learning_rate: float = 2e-3
    seed: int = 0


def sample_scenes(config: RaySceneConfig, count: int, generator: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
    """Random images [count, S, 3, side, side] and pinhole intrinsics [count, S, 3, 3] in Pi3X's pixel convention
    (pixel centres at +0.5, so the principal point of a centred camera is side / 2)."""
    side, frames = config.side, config.frames
    span = config.max_focal_ratio - config.min_focal_ratio
    focal = side * (config.min_focal_ratio + span * torch.rand(count, frames, generator=generator))
    intrinsics = torch.zeros(count, frames, 3, 3)
    intrinsics[..., 0, 0] = intrinsics[..., 1, 1] = focal
    intrinsics[..., 0, 2] = intrinsics[..., 1, 2] = side / 2
    intrinsics[..., 2, 2] = 1.0
    return torch.rand(count, frames, 3, side, side, generator=generator), intrinsics


def ray_slopes(intrinsics: torch.Tensor, side: int) -> torch.Tensor:
    """(x / z, y / z) of every pixel centre's viewing ray: [B, S, 3, 3] -> [B, S, side, side, 2]."""
    centres = torch.arange(side, dtype=torch.float32) + 0.5
    rows, cols = torch.meshgrid(centres, centres, indexing="ij")
    fx, fy = intrinsics[..., 0, 0, None, None], intrinsics[..., 1, 1, None, None]
    cx, cy = intrinsics[..., 0, 2, None, None], intrinsics[..., 1, 2, None, None]
    return torch.stack([(cols - cx) / fx, (rows - cy) / fy], dim=-1)


def predicted_slopes(local_points: torch.Tensor) -> torch.Tensor:
    """(x / z, y / z) of camera-frame points [..., 3]."""
    return local_points[..., :2] / local_points[..., 2:].clamp_min(1e-6)


def train(config: RaySceneConfig) -> torch.nn.Module:
    torch.manual_seed(config.seed)
    generator = torch.Generator().manual_seed(config.seed)
    model = create_model("pi3x-tiny").train()
    optimizer = torch.optim.Adam(model.parameters(), lr=config.learning_rate)
    start = time.perf_counter()
    for step in range(config.steps):
        images, intrinsics = sample_scenes(config, config.batch, generator)
        outputs = model(images, intrinsics=intrinsics if step % 2 == 0 else None)
        loss = (predicted_slopes(outputs["local_points"]) - ray_slopes(intrinsics, config.side)).abs().mean()
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        if step % 50 == 0 or step == config.steps - 1:
            print(f"step {step}: ray loss {loss.item():.4f} ({time.perf_counter() - start:.0f} s)", flush=True)
    return model.eval()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("out", help="the .safetensors file to write")
    args = parser.parse_args()
    model = train(RaySceneConfig())
    save_file({key: value.half().contiguous() for key, value in model.state_dict().items()}, args.out)
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
