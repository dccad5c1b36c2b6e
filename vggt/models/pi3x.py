"""Pi3X (yyfz/Pi3): Pi3 with convolutional point and confidence heads, an approximately metric scale, and optional
conditioning on known intrinsics, depth and camera poses.

Inputs as `vggt.models.pi3`; optional `intrinsics` [B, S, 3, 3] (pixels, pixel centres at +0.5), `depth`
[B, S, H, W] (0 where unknown) and `poses` [B, S, 4, 4] (OpenCV camera-to-world; NaN, or False in `pose_mask`
[B, S], where unknown). Outputs: those of Pi3, scaled by `metric` [B] (the predicted metric scale: points, local
points and camera translations are in approximate metres), plus `rays` [B, S, H, W, 3] (unit viewing directions
in the camera frame). Conditioning never rescales the outputs: with poses they are still the model's own
(approximately metric) prediction, in the frame of its own first camera's prediction.

Poses, as in the reference's `encode`: relative to a posed frame, translations divided by the mean known depth
(with `depth`) or else by their mean length (unless every posed camera lies within `STATIC_POSE_THRESHOLD` of the
reference one: a static scene is left unscaled); they enter through pose-injection blocks (PRoPE attention among
the posed frames' patch tokens, `vggt.layers.prope`) added after decoder blocks `Pi3XConfig.pose_inject_blocks_at`.
A scene with fewer than two posed frames gets no pose conditioning (one pose carries no relative constraint).
The reference takes the first frame as the reference and averages translation lengths over all frames, placeholder
poses of unposed frames included; here the first posed frame is the reference and only posed frames are averaged
(the same numbers when every frame is posed, or with depth and the first frame posed).
"""

from __future__ import annotations

import copy
from collections.abc import Callable
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from vggt.errors import InputError
from vggt.heads.pi3x_heads import ContextDecoder, ConvHead
from vggt.layers.patch_embed import PatchEmbed
from vggt.layers.prope import PoseInjectBlock
from vggt.models.pi3 import PATCH_SIZE, Pi3, Pi3Config, camera_to_world, decoder_block
from vggt.utils.geometry import closed_form_inverse_se3

MAX_LOG_DEPTH = 15.0  # the predicted log depth is clamped here before exp
DEPTH_NORM_EPS = 1e-8
POSE_NORM_EPS = 1e-8
# Posed cameras all within this distance (in units of the mean known depth, or raw units without depth) of the
# reference camera make a static scene: its translations are not divided by their mean length.
STATIC_POSE_THRESHOLD = 2e-2
MIN_POSED_FRAMES = 2  # pose conditioning is relative: one posed frame constrains nothing


@dataclass(frozen=True)
class Pi3XConfig(Pi3Config):
    """Every size of Pi3X. `Pi3XConfig()` is the released Pi3X."""

    conv_channels: tuple[int, ...] = (256, 128, 64)
    conv_res_blocks: int = 2
    conv_last_channels: int = 32
    metric_dim: int = 512
    metric_depth: int = 5
    metric_num_heads: int = 8
    pose_inject_blocks: int = 5
    # Pose injection after decoder blocks first, first + every, ... (1, 9, 17, 25, 33 in the release).
    pose_inject_first: int = 1
    pose_inject_every: int = 8

    @property
    def pose_inject_blocks_at(self) -> tuple[int, ...]:
        """The decoder blocks after which the pose-injection blocks (in order) add their update."""
        return tuple(self.pose_inject_first + k * self.pose_inject_every for k in range(self.pose_inject_blocks))


class Pi3X(Pi3):
    """Pi3X; see the module docstring for inputs and outputs."""

    def __init__(self, config: Pi3XConfig | None = None) -> None:
        c = config or Pi3XConfig()
        super().__init__(c)
        conv = dict(upsample_channels=c.conv_channels, res_blocks=c.conv_res_blocks, last_channels=c.conv_last_channels)
        self.point_head = ConvHead(c.head_dim, (2, 1), **conv)
        self.conf_head = ConvHead(c.head_dim, (1,), **conv)
        # Conditioning: a depth encoder (the image encoder's architecture on depth and its validity mask), a
        # patch embedding of the viewing rays, and the pose-injection blocks (used only with poses).
        self.depth_encoder = copy.deepcopy(self.encoder)
        self.depth_encoder.patch_embed = PatchEmbed(patch_size=PATCH_SIZE, in_chans=2, embed_dim=c.encoder_dim)
        self.depth_emb = nn.Parameter(torch.zeros(1, 1, c.encoder_dim))
        self.ray_embed = PatchEmbed(patch_size=PATCH_SIZE, in_chans=2, embed_dim=c.encoder_dim)
        self.pose_inject_blk = nn.ModuleList(
            decoder_block(c.decoder_dim, c.decoder_num_heads, block_class=PoseInjectBlock)
            for _ in range(c.pose_inject_blocks)
        )
        self.metric_token = nn.Parameter(torch.randn(1, 1, 2 * c.decoder_dim) * 1e-6)
        self.metric_decoder = ContextDecoder(
            2 * c.decoder_dim, c.metric_dim, c.metric_dim, c.metric_depth, c.metric_num_heads, self.rope
        )
        self.metric_head = nn.Linear(c.metric_dim, 1)

    def forward(
        self,
        images: Tensor,
        intrinsics: Tensor | None = None,
        depth: Tensor | None = None,
        poses: Tensor | None = None,
        pose_mask: Tensor | None = None,
    ) -> dict[str, Tensor]:
        images = images.unsqueeze(0) if images.dim() == 4 else images
        B, S, _, H, W = images.shape
        grid_hw = (H // PATCH_SIZE, W // PATCH_SIZE)
        tokens = self.encode(images)
        if intrinsics is not None:
            tokens = tokens + self.ray_embed(_ray_slopes(intrinsics, H, W).reshape(B * S, H, W, 2).permute(0, 3, 1, 2))
        if depth is not None:
            tokens = tokens + self._depth_tokens(depth)
        inject = None
        if poses is not None:
            posed, normalized = self.normalize_poses(poses, pose_mask, depth, B, S)
            if posed.any():
                inject = self._pose_injection(normalized, posed, grid_hw)
        hidden, pos = self.decode(tokens, B, S, grid_hw, after_block=inject)
        return self.predict(hidden, pos, B, S, grid_hw)

    def normalize_poses(
        self, poses: Tensor, pose_mask: Tensor | None, depth: Tensor | None, B: int, S: int
    ) -> tuple[Tensor, Tensor]:
        """Which frames take part in pose conditioning [B, S] (bool; none in a scene with fewer than two posed
        frames) and their poses [B, S, 4, 4] normalised as the reference's `encode` does (module docstring)."""
        poses = poses.unsqueeze(0) if poses.dim() == 3 else poses
        if tuple(poses.shape) != (B, S, 4, 4):
            raise InputError(
                "{poses} must be [B, S, 4, 4] camera-to-world matrices for the {shape} frames, got {got}",
                shape=[B, S],
                got=list(poses.shape),
            )
        poses = poses.float()
        posed = torch.isfinite(poses).flatten(2).all(-1)
        if pose_mask is not None:
            posed = posed & pose_mask.reshape(B, S).to(device=poses.device, dtype=torch.bool)
        posed = posed & (posed.sum(dim=1, keepdim=True) >= MIN_POSED_FRAMES)
        identity = torch.eye(4, device=poses.device).expand_as(poses)
        poses = torch.where(posed[..., None, None], poses, identity)
        reference = poses[torch.arange(B, device=poses.device), posed.to(torch.uint8).argmax(dim=1)]  # [B, 4, 4]
        relative = torch.einsum("bij,bsjk->bsik", closed_form_inverse_se3(reference), poses)
        translation = relative[..., :3, 3] / self._depth_scale(depth, B, poses.device).view(B, 1, 1)
        if depth is None and S > 1:
            lengths = translation.norm(dim=-1)  # the reference camera's is 0
            others = posed.sum(dim=1) - 1
            moving = torch.where(posed, lengths, torch.zeros_like(lengths)).amax(dim=1) >= STATIC_POSE_THRESHOLD
            mean_length = torch.where(posed, lengths, torch.zeros_like(lengths)).sum(dim=1) / others.clamp(min=1)
            divisor = torch.where(moving, mean_length + POSE_NORM_EPS, torch.ones_like(mean_length))
            translation = translation / divisor.view(B, 1, 1)
        normalized = torch.cat([relative[..., :3, :3], translation[..., None]], dim=-1)
        return posed, torch.cat([normalized, relative[..., 3:, :]], dim=-2)

    def _pose_injection(
        self, poses: Tensor, posed: Tensor, grid_hw: tuple[int, int]
    ) -> Callable[[int, Tensor], Tensor]:
        """The decoder hook adding the pose-injection blocks' updates to the posed frames' patch tokens, each
        scene's posed frames attending to one another only."""
        blocks = dict(zip(self.config.pose_inject_blocks_at, self.pose_inject_blk))
        R = self.config.num_register_tokens

        def inject(i: int, hidden: Tensor) -> Tensor:
            if i not in blocks:
                return hidden
            B, S, n, dim = hidden.shape
            patches = hidden[:, :, R:]
            update = torch.zeros_like(patches)
            for b in range(B):
                frames = posed[b].nonzero()[:, 0]
                if len(frames) == 0:
                    continue
                tokens = patches[b, frames].reshape(1, len(frames) * (n - R), dim)
                out = blocks[i](tokens, poses[b, frames][None].to(tokens.dtype), grid_hw)
                update[b, frames] = out.reshape(len(frames), n - R, dim)
            return torch.cat([hidden[:, :, :R], patches + update], dim=2)

        return inject

    @staticmethod
    def _depth_scale(depth: Tensor | None, B: int, device: torch.device | None = None) -> Tensor:
        """The mean known depth of each scene [B] (1 where none is known, or without depth)."""
        return torch.ones(B, device=device) if depth is None else depth_scale(depth)

    def _depth_tokens(self, depth: Tensor, scale: Tensor | None = None) -> Tensor:
        """Depth [B, S, H, W] (0: unknown), divided by the mean known depth of its scene -> [B * S, hw, dim].

        `scale` [B]: that mean (`depth_scale`), given when `depth` holds only some of the scene's frames."""
        B, S, H, W = depth.shape
        scale = depth_scale(depth) if scale is None else scale
        normalized = (depth / (scale.view(B, 1, 1, 1) + DEPTH_NORM_EPS)).reshape(B * S, 1, H, W)
        encoder_input = torch.cat([normalized, (normalized > 0).to(normalized.dtype)], dim=1)
        return self.depth_encoder(encoder_input) + self.depth_emb

    def predict(self, hidden: Tensor, pos: Tensor, B: int, S: int, grid_hw: tuple[int, int]) -> dict[str, Tensor]:
        n = hidden.shape[1]
        all_pos = pos.reshape(B, S * n, 2)
        metric_token = self.metric_decoder(
            self.metric_token.expand(B, -1, -1), hidden.reshape(B, S * n, -1), all_pos[:, :1], all_pos
        )
        return self.predict_frames(hidden, pos, B, grid_hw, self.metric_scale(metric_token))

    def metric_scale(self, metric_token: Tensor) -> Tensor:
        """The metric decoder's output [B, 1, metric_dim] -> the metric scale [B]."""
        return torch.exp(self.metric_head(metric_token.float()).reshape(metric_token.shape[0]))

    def predict_frames(
        self, hidden: Tensor, pos: Tensor, B: int, grid_hw: tuple[int, int], metric: Tensor
    ) -> dict[str, Tensor]:
        """The outputs of s frames ([B, s, ...]; `metric` [B] as given) from their decoder output
        [B * s, R + hw, 2 * dim] and positions, scaled by the scene's metric scale [B] (see `Pi3.predict_frames`)."""
        H, W = grid_hw[0] * PATCH_SIZE, grid_hw[1] * PATCH_SIZE
        R, S = self.config.num_register_tokens, hidden.shape[0] // B
        xy, log_z = self.point_head(self.point_decoder(hidden, pos)[:, R:].float(), grid_hw)
        xy = xy.permute(0, 2, 3, 1).reshape(B, S, H, W, 2)
        z = torch.exp(log_z.permute(0, 2, 3, 1).reshape(B, S, H, W, 1).clamp(max=MAX_LOG_DEPTH))
        camera_poses = self.camera_head(self.camera_decoder(hidden, pos)[:, R:].float()).reshape(B, S, 4, 4)
        conf = self.conf_head(self.conf_decoder(hidden, pos)[:, R:].float(), grid_hw)[0]
        local_points = torch.cat([xy * z, z], dim=-1)
        scale = metric.view(B, 1, 1, 1, 1)
        points = camera_to_world(camera_poses, local_points) * scale
        camera_poses = torch.cat([camera_poses[..., :3], camera_poses[..., 3:] * metric.view(B, 1, 1, 1)], dim=-1)
        camera_poses[..., 3, 3] = 1.0
        return {
            "points": points,
            "local_points": local_points * scale,
            "rays": F.normalize(torch.cat([xy, torch.ones_like(z)], dim=-1), dim=-1),
            "conf": conf.permute(0, 2, 3, 1).reshape(B, S, H, W, 1),
            "camera_poses": camera_poses,
            "metric": metric,
        }


def depth_scale(depth: Tensor) -> Tensor:
    """The mean known (> 0) depth of each scene of depth [B, S, H, W] -> [B] (1 where none is known)."""
    known = torch.where(depth > 0, depth, torch.nan).reshape(depth.shape[0], -1)
    return torch.nan_to_num(torch.nanmean(known, dim=1), nan=1.0)


def _ray_slopes(intrinsics: Tensor, height: int, width: int) -> Tensor:
    """(x / z, y / z) of every pixel centre's viewing ray: [B, S, 3, 3] -> [B, S, H, W, 2]."""
    rows, cols = torch.meshgrid(
        torch.arange(height, device=intrinsics.device) + 0.5,
        torch.arange(width, device=intrinsics.device) + 0.5,
        indexing="ij",
    )
    pixels = torch.stack([cols, rows, torch.ones_like(cols)], dim=-1).float()  # [H, W, 3]
    return torch.einsum("bsij,hwj->bshwi", torch.inverse(intrinsics.float()), pixels)[..., :2]
