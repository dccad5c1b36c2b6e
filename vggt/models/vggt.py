"""VGGT: aggregator plus camera, depth, point and track heads."""

from __future__ import annotations

import dataclasses
from collections.abc import Collection
from pathlib import Path
from typing import Any

import torch
from huggingface_hub import PyTorchModelHubMixin
from torch import Tensor, nn

from vggt.heads.camera_head import CameraHead
from vggt.heads.dpt_head import DPTHead
from vggt.heads.track_head import TrackHead
from vggt.models.aggregator import Aggregator
from vggt.models.config import VGGTConfig, config_from_reference_arguments, get_preset
from vggt.models.engines import DEFAULT_ENGINE, ForwardEngine, resolve_engine


class VGGT(
    nn.Module,
    PyTorchModelHubMixin,
    library_name="vggt",
    repo_url="https://github.com/facebookresearch/vggt",
    tags=["3d-reconstruction", "depth-estimation", "camera-pose-estimation", "point-tracking"],
    license="other",
):
    """Visual Geometry Grounded Transformer.

    `VGGT()` is VGGT-1B with random weights; `VGGT.from_pretrained("facebook/VGGT-1B")` loads the
    released checkpoint; `VGGT.from_preset("tiny")` builds a small random model. `gradient_checkpointing`:
    recompute the transformer blocks in the backward pass in training mode (`set_gradient_checkpointing`).
    """

    def __init__(
        self,
        img_size: int | VGGTConfig = 518,
        patch_size: int = 14,
        embed_dim: int = 1024,
        enable_camera: bool = True,
        enable_point: bool = True,
        enable_depth: bool = True,
        enable_track: bool = True,
        *,
        config: VGGTConfig | None = None,
        gradient_checkpointing: bool = True,
    ) -> None:
        """The reference's constructor (`VGGT()`, `VGGT(518)`, `VGGT(enable_track=False)`), or ours with a config.

        `VGGT(config)` / `VGGT(config=config)` builds any architecture; next to a config, a reference argument
        changes its field only where it differs from the reference's default (`VGGT(config, enable_track=False)`).
        """
        super().__init__()
        reference = dict(
            img_size=img_size,
            patch_size=patch_size,
            embed_dim=embed_dim,
            enable_camera=enable_camera,
            enable_point=enable_point,
            enable_depth=enable_depth,
            enable_track=enable_track,
        )
        config = config_from_reference_arguments(reference, config)
        self.config = config
        c = config

        self.aggregator = Aggregator(c, gradient_checkpointing=gradient_checkpointing)
        # Registration order follows the released checkpoint's key order.
        self.camera_head = (
            CameraHead(
                dim_in=c.head_dim_in,
                trunk_depth=c.camera_trunk_depth,
                num_heads=c.camera_num_heads,
                mlp_ratio=c.camera_mlp_ratio,
                init_values=c.layerscale,
            )
            if c.enable_camera
            else None
        )
        dense = dict(
            dim_in=c.head_dim_in,
            patch_size=c.patch_size,
            out_channels=c.dpt_out_channels,
            intermediate_layer_idx=c.dpt_layers,
        )
        self.point_head = (
            DPTHead(output_dim=4, activation="inv_log", conf_activation="expp1", features=c.dpt_features, **dense)
            if c.enable_point
            else None
        )
        self.depth_head = (
            DPTHead(output_dim=2, activation="exp", conf_activation="expp1", features=c.dpt_features, **dense)
            if c.enable_depth
            else None
        )
        self.track_head = (
            TrackHead(
                features=c.track_features,
                iters=c.track_iterations,
                stride=c.track_stride,
                corr_levels=c.track_corr_levels,
                corr_radius=c.track_corr_radius,
                hidden_size=c.track_hidden_size,
                updateformer_depth=c.track_updateformer_depth,
                updateformer_num_heads=c.track_updateformer_num_heads,
                num_virtual_tracks=c.track_num_virtual_tracks,
                **dense,
            )
            if c.enable_track
            else None
        )

    # ------------------------------------------------------------------ construction and loading

    @classmethod
    def from_preset(cls, name: str = "vggt-1b", **overrides: Any) -> VGGT:
        """A randomly initialised model of a named preset (`vggt-1b`, `tiny`); keywords override fields."""
        return cls(dataclasses.replace(get_preset(name), **overrides))

    @classmethod
    def from_pretrained(  # type: ignore[override]
        cls,
        pretrained_model_name_or_path: str | Path,
        *,
        config: VGGTConfig | None = None,
        preset: str | None = None,
        device: str | torch.device | None = None,
        dtype: torch.dtype | None = None,
        map_location: str | torch.device | None = None,
        strict: bool = True,
        revision: str | None = None,
        cache_dir: str | Path | None = None,
        force_download: bool = False,
        local_files_only: bool = False,
        token: str | bool | None = None,
        proxies: dict | None = None,
        resume_download: bool | None = None,
        **model_kwargs: Any,
    ) -> VGGT:
        """Load weights from a Hub repo id, a `save_pretrained` directory, a `.safetensors` or a `.pt`/`.pth` file.

        The architecture comes from `config`, else `preset`, else the checkpoint's `config.json`, else VGGT-1B.
        Keywords of the reference constructor (`enable_track=False`, ...) apply to it as in the Hub mixin; one
        that contradicts the checkpoint (another `embed_dim`) or is unknown is refused. `map_location` (or
        `device`) is where the model goes. Loading is strict unless `strict=False`, which keeps freshly
        initialised tensors for keys the checkpoint lacks (the mixin's default is False; ours is True).
        `proxies` and `resume_download` are accepted for the mixin's signature and have no effect.
        """
        from vggt.models import checkpoint as ckpt

        return ckpt.load_pretrained(
            cls,
            pretrained_model_name_or_path,
            config=config,
            preset=preset,
            device=device,
            dtype=dtype,
            map_location=map_location,
            strict=strict,
            model_kwargs=model_kwargs,
            revision=revision,
            cache_dir=cache_dir,
            force_download=force_download,
            local_files_only=local_files_only,
            token=token,
        )

    def _save_pretrained(self, save_directory: Path) -> None:
        from vggt.models import checkpoint as ckpt

        ckpt.save_model_dir(save_directory, self.state_dict(), self.config)

    def set_gradient_checkpointing(self, enabled: bool = True) -> None:
        """Recompute transformer blocks in the backward pass when training (on by default)."""
        self.aggregator.set_gradient_checkpointing(enabled)

    # ------------------------------------------------------------------ forward

    def check_inputs(self, images: Tensor, query_points: Tensor | None) -> tuple[Tensor, Tensor | None]:
        """images as [B, S, 3, H, W] and query_points as [B, N, 2] (or None), or a ValueError saying what is wrong."""
        if not isinstance(images, Tensor):
            raise ValueError(
                f"images must be a torch.Tensor [S, 3, H, W] or [B, S, 3, H, W], got {type(images).__name__}"
            )
        if images.dim() == 4:
            images = images.unsqueeze(0)
        if images.dim() != 5:
            raise ValueError(f"images must have shape [S, 3, H, W] or [B, S, 3, H, W], got {tuple(images.shape)}")
        B, S, C, H, W = images.shape
        if B == 0 or S == 0:
            raise ValueError(f"images is empty (shape {tuple(images.shape)}): pass at least one frame")
        if C != 3:
            raise ValueError(f"images must have 3 (RGB) channels in dim -3, got {C} (shape {tuple(images.shape)})")
        p = self.config.patch_size
        if H % p or W % p or H == 0 or W == 0:
            raise ValueError(
                f"image height and width must be positive multiples of the patch size {p}, got {H}x{W}; "
                "use vggt.utils.load_fn.load_and_preprocess_images to resize"
            )
        if not torch.isfinite(images).all():
            raise ValueError("images contain NaN or infinite values; expected values in [0, 1]")
        if query_points is not None:
            if query_points.dim() == 2:
                query_points = query_points.unsqueeze(0)
            if query_points.dim() != 3 or query_points.shape[-1] != 2 or query_points.shape[0] != B:
                raise ValueError(
                    f"query_points must have shape [N, 2] or [B={B}, N, 2] (pixel x, y in the first frame), "
                    f"got {tuple(query_points.shape)}"
                )
            if not torch.isfinite(query_points).all():
                raise ValueError("query_points contain NaN or infinite values")
        return images, query_points

    def head_dtype(self) -> torch.dtype:
        """The dtype the heads compute in: their parameters' (float32 unless the model was cast)."""
        for head in (self.camera_head, self.depth_head, self.point_head, self.track_head):
            if head is not None:
                return next(head.parameters()).dtype
        return torch.float32

    def heads_to_run(self, heads: Collection[str] | None) -> tuple[str, ...]:
        """The names of the heads to run: `heads`, checked against the model's (None: every head it has)."""
        enabled = self.config.enabled_heads()
        if heads is None:
            return enabled
        heads = tuple(heads)
        missing = [h for h in heads if h not in enabled]
        if missing:
            raise ValueError(f"heads {missing} are not part of this model; it has {list(enabled)}")
        return heads

    def forward(
        self,
        images: Tensor,
        query_points: Tensor | None = None,
        *,
        heads: Collection[str] | None = None,
        engine: ForwardEngine | str | None = DEFAULT_ENGINE,
    ) -> dict[str, Any]:
        """Predict cameras, depth, point maps and (with query points) tracks.

        Args:
            images: [S, 3, H, W] or [B, S, 3, H, W] in [0, 1]; H and W multiples of the patch size. With the
                streaming engine they may stay on the CPU while the model is on a GPU.
            query_points: optional [N, 2] or [B, N, 2] pixel (x, y) in the first frame.
            heads: which heads to run (names of HEAD_NAMES, e.g. ("track",)); None runs every head the model has.
            engine: "auto" (the default): for inference (no autograd, eval mode) the streaming engine with the
                automatic chunk sizes of the model's device (`vggt.runtime.StreamingEngine.auto`): the same
                numbers in chunks, with working memory bounded by the chunk sizes rather than by the scene;
                otherwise the reference forward pass (see `vggt.models.engines`). None: always the reference
                forward pass, the one training uses, in any grad mode. An engine object: that engine.

        Returns a dict with `pose_enc` [B, S, 9], `pose_enc_list` (one per refinement iteration),
        `depth` [B, S, H, W, 1], `depth_conf` [B, S, H, W], `world_points` [B, S, H, W, 3],
        `world_points_conf` [B, S, H, W], `images` (eval mode), and with query points `track`
        [B, S, N, 2], `vis` [B, S, N], `conf` [B, S, N] (in training mode also `track_list`, the
        tracks after each tracker iteration). With the engine's offload, the dense outputs are on the CPU.
        """
        images, query_points = self.check_inputs(images, query_points)
        heads = self.heads_to_run(heads)
        engine = resolve_engine(engine, self, images)
        if engine is not None:
            return engine.run(self, images, query_points, heads)
        return self._reference_forward(images, query_points, heads)

    def _reference_forward(self, images: Tensor, query_points: Tensor | None, heads: tuple[str, ...]) -> dict[str, Any]:
        """Every frame and token at once, as the reference does; the path training takes."""
        tokens, patch_start_idx = self.aggregator(images, keep_layers=self.config.layers_needed(heads))
        # The heads run with autocast off, in their parameters' dtype (float32 unless the model was cast),
        # as the reference runs them in float32 under mixed precision.
        head_dtype = self.head_dtype()
        tokens = [t.to(head_dtype) if t is not None else None for t in tokens]
        head_images = images.to(head_dtype)
        chunk = self.config.frames_chunk_size
        predictions: dict[str, Any] = {}
        with torch.autocast(device_type=images.device.type, enabled=False):
            if "camera" in heads:
                pose_enc_list = self.camera_head(tokens, num_iterations=self.config.camera_iterations)
                predictions["pose_enc"] = pose_enc_list[-1]
                predictions["pose_enc_list"] = pose_enc_list
            if "depth" in heads:
                depth, depth_conf = self.depth_head(tokens, head_images, patch_start_idx, frames_chunk_size=chunk)
                predictions["depth"], predictions["depth_conf"] = depth, depth_conf
            if "point" in heads:
                points, points_conf = self.point_head(tokens, head_images, patch_start_idx, frames_chunk_size=chunk)
                predictions["world_points"], predictions["world_points_conf"] = points, points_conf
            if "track" in heads and query_points is not None:
                track_list, vis, conf = self.track_head(
                    tokens, head_images, patch_start_idx, query_points=query_points.to(head_dtype)
                )
                predictions["track"], predictions["vis"], predictions["conf"] = track_list[-1], vis, conf
                if self.training:  # every refinement iteration is supervised, later ones weighted more
                    predictions["track_list"] = track_list
        if not self.training:
            predictions["images"] = images
        return predictions
