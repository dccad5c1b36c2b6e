"""Dense Prediction Transformer (DPT) head: per-pixel maps from four aggregator outputs.

After "Vision Transformers for Dense Prediction" (Ranftl et al., 2021) as used by Depth Anything
V2: the patch tokens of four aggregator layers become feature maps at 4x, 2x, 1x and 1/2x the patch
grid, are fused coarse to fine by RefineNet-style blocks, and are upsampled to the image (or to
1/`down_ratio` of it). The depth and point heads finish with a small convolutional output branch
and activations; the track head uses the fused features directly (`feature_only=True`).
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F
import torch.utils.checkpoint
from torch import Tensor, nn

from vggt.errors import InputError
from vggt.heads.head_act import CONF_ACTIVATIONS, DENSE_ACTIVATIONS, activate_head, check_activation
from vggt.heads.utils import create_uv_grid, make_sincos_pos_embed

# Hidden width of the output branch `scratch.output_conv2`, whatever the feature width.
OUTPUT_HIDDEN_CHANNELS = 32

# The position embedding is added to feature maps at this fraction of its unit amplitude.
POS_EMBED_SCALE = 0.1

# Bilinear resampling of more output elements than this is split over the batch: the kernels index
# with 32-bit integers.
INTERPOLATE_MAX_ELEMENTS = 1_610_612_736


def interpolate_bilinear(x: Tensor, size: tuple[int, int]) -> Tensor:
    """Bilinear (align_corners=True) resize of [N, C, h, w] to [N, C, *size], in batch pieces when huge."""
    num_elements = size[0] * size[1] * x.shape[0] * x.shape[1]
    if num_elements <= INTERPOLATE_MAX_ELEMENTS:
        return F.interpolate(x, size=size, mode="bilinear", align_corners=True)
    pieces = torch.chunk(x, chunks=num_elements // INTERPOLATE_MAX_ELEMENTS + 1, dim=0)
    return torch.cat([F.interpolate(p, size=size, mode="bilinear", align_corners=True) for p in pieces]).contiguous()


def custom_interpolate(
    x: Tensor,
    size: tuple[int, int] | None = None,
    scale_factor: float | None = None,
    mode: str = "bilinear",
    align_corners: bool = True,
) -> Tensor:
    """Resize [N, C, h, w] to `size` (or `scale_factor` times h and w), in batch pieces when huge (bilinear,
    `align_corners`: `interpolate_bilinear`)."""
    if size is None:
        if scale_factor is None:
            raise ValueError("custom_interpolate needs size or scale_factor")
        size = (int(x.shape[-2] * scale_factor), int(x.shape[-1] * scale_factor))
    if mode == "bilinear" and align_corners:
        return interpolate_bilinear(x, tuple(size))
    return F.interpolate(x, size=tuple(size), mode=mode, align_corners=align_corners)


def _check_plain_dpt(name: str, **unsupported: bool) -> None:
    refused = [key for key, given in unsupported.items() if given]
    if refused:
        raise InputError(f"{name} is the released DPT's (no batch norm, groups or deconvolution); leave {refused} out")


class ResidualConvUnit(nn.Module):
    """`act(x) + conv2(act(conv1(act(x))))` on [N, C, h, w], `act` being `activation` (a module).

    The skip path carries act(x), not x: the released model's activation is an in-place ReLU, so the input it added
    back had already been rectified, and its weights were trained that way.
    """

    def __init__(self, features: int, activation: nn.Module, bn: bool, groups: int = 1) -> None:
        super().__init__()
        _check_plain_dpt("ResidualConvUnit", bn=bn, groups=groups != 1)
        self.conv1 = nn.Conv2d(features, features, kernel_size=3, padding=1)
        self.conv2 = nn.Conv2d(features, features, kernel_size=3, padding=1)
        self.activation = activation

    def forward(self, x: Tensor) -> Tensor:
        x = F.relu(x) if isinstance(self.activation, nn.ReLU) else self.activation(x)
        return self.conv2(self.activation(self.conv1(x))) + x


class FeatureFusionBlock(nn.Module):
    """Add a refined skip connection (if `has_residual`), refine, upsample (to `size` when given here or at
    construction, else twice h and w), and mix channels with a 1x1 conv."""

    def __init__(
        self,
        features: int,
        activation: nn.Module,
        deconv: bool = False,
        bn: bool = False,
        expand: bool = False,
        align_corners: bool = True,
        size: tuple[int, int] | None = None,
        has_residual: bool = True,
        groups: int = 1,
    ) -> None:
        super().__init__()
        _check_plain_dpt("FeatureFusionBlock", deconv=deconv, bn=bn, expand=expand, groups=groups != 1)
        _check_plain_dpt("FeatureFusionBlock (align_corners=False)", align_corners=not align_corners)
        self.out_conv = nn.Conv2d(features, features, kernel_size=1)
        if has_residual:
            self.resConfUnit1 = ResidualConvUnit(features, activation, bn)
        self.has_skip = has_residual
        self.resConfUnit2 = ResidualConvUnit(features, activation, bn)
        self.size = size

    def forward(self, x: Tensor, skip: Tensor | None = None, size: tuple[int, int] | None = None) -> Tensor:
        """[N, C, h, w] (plus skip [N, C, h, w]) -> [N, C, *size]; size defaults to twice h and w."""
        if skip is not None:
            if not self.has_skip:
                raise ValueError("this fusion block was built without a skip connection (has_residual=False)")
            x = x + self.resConfUnit1(skip)
        x = self.resConfUnit2(x)
        size = size or self.size or (2 * x.shape[-2], 2 * x.shape[-1])
        return self.out_conv(interpolate_bilinear(x, tuple(size)))


class DPTScratch(nn.Module):
    """Fusion stage: map the four levels to `features` channels and fuse them coarse to fine."""

    def __init__(self, in_channels: Sequence[int], features: int, output_dim: int, feature_only: bool) -> None:
        super().__init__()
        self.layer1_rn = nn.Conv2d(in_channels[0], features, kernel_size=3, padding=1, bias=False)
        self.layer2_rn = nn.Conv2d(in_channels[1], features, kernel_size=3, padding=1, bias=False)
        self.layer3_rn = nn.Conv2d(in_channels[2], features, kernel_size=3, padding=1, bias=False)
        self.layer4_rn = nn.Conv2d(in_channels[3], features, kernel_size=3, padding=1, bias=False)
        self.refinenet1 = FeatureFusionBlock(features, nn.ReLU(inplace=True))
        self.refinenet2 = FeatureFusionBlock(features, nn.ReLU(inplace=True))
        self.refinenet3 = FeatureFusionBlock(features, nn.ReLU(inplace=True))
        self.refinenet4 = FeatureFusionBlock(features, nn.ReLU(inplace=True), has_residual=False)
        if feature_only:
            self.output_conv1 = nn.Conv2d(features, features, kernel_size=3, padding=1)
        else:
            self.output_conv1 = nn.Conv2d(features, features // 2, kernel_size=3, padding=1)
            self.output_conv2 = nn.Sequential(
                nn.Conv2d(features // 2, OUTPUT_HIDDEN_CHANNELS, kernel_size=3, padding=1),
                nn.ReLU(),
                nn.Conv2d(OUTPUT_HIDDEN_CHANNELS, output_dim, kernel_size=1),
            )

    def forward(self, levels: list[Tensor]) -> Tensor:
        """Levels [N, C_i, h_i, w_i] from finest to coarsest -> fused map [N, C', 2 * h_1, 2 * w_1].

        The list is emptied as the levels are consumed, so that each is freed once used.
        """
        rn_layers = (self.layer1_rn, self.layer2_rn, self.layer3_rn, self.layer4_rn)
        fusions = (self.refinenet1, self.refinenet2, self.refinenet3)
        out = self.refinenet4(rn_layers[3](levels.pop()), size=levels[-1].shape[-2:])
        for i in (2, 1, 0):
            skip = rn_layers[i](levels.pop())
            out = fusions[i](out, skip, size=levels[-1].shape[-2:] if levels else None)
            del skip
        return self.output_conv1(out)


class DPTHead(nn.Module):
    """Dense head reading the patch tokens of four aggregator outputs.

    Returns (predictions [B, S, H, W, output_dim - 1], confidence [B, S, H, W]), or with
    `feature_only=True` feature maps [B, S, features, H / down_ratio, W / down_ratio].
    """

    def __init__(
        self,
        dim_in: int,
        patch_size: int = 14,
        output_dim: int = 4,
        activation: str = "inv_log",
        conf_activation: str = "expp1",
        features: int = 256,
        out_channels: Sequence[int] = (256, 512, 1024, 1024),
        intermediate_layer_idx: Sequence[int] = (4, 11, 17, 23),
        pos_embed: bool = True,
        feature_only: bool = False,
        down_ratio: int = 1,
    ) -> None:
        super().__init__()
        if len(out_channels) != 4 or len(intermediate_layer_idx) != 4:
            raise ValueError(
                f"DPTHead fuses exactly 4 levels: got out_channels {tuple(out_channels)} and "
                f"intermediate_layer_idx {tuple(intermediate_layer_idx)}"
            )
        if down_ratio < 1:
            raise ValueError(f"down_ratio must be a positive integer, got {down_ratio}")
        if not feature_only:
            check_activation(activation, DENSE_ACTIVATIONS, "dense activation")
            check_activation(conf_activation, CONF_ACTIVATIONS, "confidence activation")
            if output_dim < 2:
                raise ValueError(f"output_dim must be at least 2 (values plus a confidence), got {output_dim}")
        self.patch_size = patch_size
        self.activation = activation
        self.conf_activation = conf_activation
        self.pos_embed = pos_embed
        self.feature_only = feature_only
        self.down_ratio = down_ratio
        self.intermediate_layer_idx = tuple(intermediate_layer_idx)
        # Recompute each frame chunk in the backward pass instead of storing its activations.
        self.gradient_checkpointing = False

        self.norm = nn.LayerNorm(dim_in)
        self.projects = nn.ModuleList([nn.Conv2d(dim_in, c, kernel_size=1) for c in out_channels])
        # The four levels at 4x, 2x, 1x and 1/2x the patch grid.
        self.resize_layers = nn.ModuleList(
            [
                nn.ConvTranspose2d(out_channels[0], out_channels[0], kernel_size=4, stride=4),
                nn.ConvTranspose2d(out_channels[1], out_channels[1], kernel_size=2, stride=2),
                nn.Identity(),
                nn.Conv2d(out_channels[3], out_channels[3], kernel_size=3, stride=2, padding=1),
            ]
        )
        self.scratch = DPTScratch(out_channels, features, output_dim, feature_only)

    def forward(
        self,
        aggregated_tokens_list: list[Tensor | None],
        images: Tensor,
        patch_start_idx: int,
        frames_chunk_size: int | None = 8,
    ) -> Tensor | tuple[Tensor, Tensor]:
        """Run on tokens [B, S, N, dim_in] for images [B, S, 3, H, W], `frames_chunk_size` frames at a time.

        Only the images' shape is used. `frames_chunk_size` None (or >= S) runs all frames at once;
        the result does not depend on it, only the peak memory does.
        """
        if images.ndim != 5:
            raise ValueError(f"images must be [B, S, 3, H, W], got shape {tuple(images.shape)}")
        if frames_chunk_size is not None and frames_chunk_size < 1:
            raise ValueError(f"frames_chunk_size must be a positive integer or None, got {frames_chunk_size}")
        num_frames, (height, width) = images.shape[1], images.shape[-2:]
        if frames_chunk_size is None or frames_chunk_size >= num_frames:
            return self.forward_frames(aggregated_tokens_list, height, width, patch_start_idx, 0, num_frames)

        checkpointing = self.gradient_checkpointing and self.training
        outputs = []
        for start in range(0, num_frames, frames_chunk_size):
            args = (aggregated_tokens_list, height, width, patch_start_idx, start, start + frames_chunk_size)
            if checkpointing:
                outputs.append(torch.utils.checkpoint.checkpoint(self.forward_frames, *args, use_reentrant=False))
            else:
                outputs.append(self.forward_frames(*args))
        if self.feature_only:
            return torch.cat(outputs, dim=1)
        return torch.cat([p for p, _ in outputs], dim=1), torch.cat([c for _, c in outputs], dim=1)

    def forward_frames(
        self,
        aggregated_tokens_list: list[Tensor | None],
        height: int,
        width: int,
        patch_start_idx: int,
        start: int,
        end: int,
    ) -> Tensor | tuple[Tensor, Tensor]:
        """The head on frames start:end of every scene: what `forward` computes for one frame chunk.

        Returns (predictions [B, end - start, H, W, output_dim - 1], confidence [B, end - start, H, W]), or with
        `feature_only` feature maps [B, end - start, features, H / down_ratio, W / down_ratio]. The tokens may
        live on another device or in another dtype (e.g. bfloat16 from a mixed-precision trunk, or offloaded to
        the CPU): each chunk is converted to this head's own on the way in.
        """
        patch_h, patch_w = height // self.patch_size, width // self.patch_size
        weight = self.norm.weight
        levels = []
        for level, layer_idx in enumerate(self.intermediate_layer_idx):
            tokens = aggregated_tokens_list[layer_idx]
            if tokens is None:
                raise ValueError(f"DPTHead needs aggregator output {layer_idx}, but the tokens list holds None there")
            x = tokens[:, start:end, patch_start_idx:].to(device=weight.device, dtype=weight.dtype)
            B, S, num_patches, dim = x.shape
            if num_patches != patch_h * patch_w:
                raise ValueError(
                    f"aggregator output {layer_idx} has {num_patches} patch tokens after index {patch_start_idx}, "
                    f"but {height}x{width} images with patch size {self.patch_size} make {patch_h}x{patch_w}"
                )
            x = self.norm(x.reshape(B * S, num_patches, dim))
            x = x.permute(0, 2, 1).reshape(B * S, dim, patch_h, patch_w)
            x = self.projects[level](x)
            if self.pos_embed:
                x = self._add_pos_embed(x, width / height)
            levels.append(self.resize_layers[level](x))
        del x

        out = self.scratch(levels)  # consumes `levels`
        out_size = (int(patch_h * self.patch_size / self.down_ratio), int(patch_w * self.patch_size / self.down_ratio))
        out = interpolate_bilinear(out, out_size)
        if self.pos_embed:
            out = self._add_pos_embed(out, width / height)
        if self.feature_only:
            return out.reshape(B, S, *out.shape[1:])

        out = self.scratch.output_conv2(out)
        preds, conf = activate_head(out, activation=self.activation, conf_activation=self.conf_activation)
        return preds.reshape(B, S, *preds.shape[1:]), conf.reshape(B, S, *conf.shape[1:])

    @staticmethod
    def _add_pos_embed(x: Tensor, aspect_ratio: float) -> Tensor:
        """Add the scaled sinusoidal UV embedding of the image plane to a feature map [N, C, h, w].

        The embedding's first half depends on the column only and its second half on the row only, so
        it is built per column and per row and added by broadcasting, never as a full [C, h, w] map.
        The addition is in place unless x takes part in autograd (x is a fresh output of the caller).
        """
        # The grid is built in at least float32 so low-precision runs keep exact positions.
        grid_dtype = torch.promote_types(x.dtype, torch.float32)
        height, width, channels = x.shape[-2], x.shape[-1], x.shape[1]
        grid = create_uv_grid(width, height, aspect_ratio=aspect_ratio, dtype=grid_dtype, device=x.device)
        half = channels // 2
        columns = make_sincos_pos_embed(half, grid[0, :, 0]) * POS_EMBED_SCALE  # [w, C/2]
        rows = make_sincos_pos_embed(half, grid[:, 0, 1]) * POS_EMBED_SCALE  # [h, C/2]
        by_column = columns.t()[None, :, None, :].to(x.dtype)
        by_row = rows.t()[None, :, :, None].to(x.dtype)
        if x.requires_grad:
            return x + torch.cat([by_column.expand(-1, -1, height, -1), by_row.expand(-1, -1, -1, width)], dim=1)
        x[:, :half] += by_column
        x[:, half:] += by_row
        return x
