"""One dataclass that fixes every size of a VGGT model, and the named presets."""

from __future__ import annotations

import dataclasses
from collections.abc import Collection, Sequence
from dataclasses import dataclass, field
from typing import Any

from vggt.errors import InputError

# The released VGGT-1B weights on the Hugging Face Hub: the checkpoint used when none is named.
DEFAULT_CHECKPOINT = "facebook/VGGT-1B"
# The heads a VGGT can have; `enable_<name>` switches each one on.
HEAD_NAMES = ("camera", "depth", "point", "track")
# Keywords of the reference constructor, kept so that `VGGT(img_size=..., enable_track=False)` works and the
# reference's config.json reads.
REFERENCE_DEFAULTS: dict[str, Any] = {
    "img_size": 518,
    "patch_size": 14,
    "embed_dim": 1024,
    "enable_camera": True,
    "enable_point": True,
    "enable_depth": True,
    "enable_track": True,
}
REFERENCE_KWARGS = tuple(REFERENCE_DEFAULTS)


@dataclass
class VGGTConfig:
    """Every architectural size of VGGT. `VGGTConfig()` is VGGT-1B.

    Widths of the heads follow from `embed_dim`: they read frame and global tokens concatenated,
    i.e. `2 * embed_dim` channels.
    """

    # Images and patches.
    img_size: int = 518  # the patch encoder's position grid is trained at this size
    # The longest image side the weights were trained at (the trainer records it); None: img_size. Inference
    # runs at `default_resolution` unless told otherwise.
    train_resolution: int | None = None
    patch_size: int = 14
    embed_dim: int = 1024
    num_register_tokens: int = 4

    # Patch encoder (DINOv2 ViT with registers). Its width is `embed_dim`.
    patch_embed_depth: int = 24
    patch_embed_num_heads: int = 16
    patch_embed_mlp_ratio: float = 4.0
    patch_embed_layerscale: float = 1.0

    # Aggregator: `depth` frame blocks alternating with `depth` global blocks.
    depth: int = 24
    num_heads: int = 16
    mlp_ratio: float = 4.0
    qk_norm: bool = True
    rope_freq: float = 100.0
    layerscale: float = 0.01

    # Camera head.
    camera_trunk_depth: int = 4
    camera_num_heads: int = 16
    camera_mlp_ratio: float = 4.0
    camera_iterations: int = 4

    # Dense (DPT) heads for depth and world points.
    dpt_features: int = 256
    dpt_out_channels: tuple[int, int, int, int] = (256, 512, 1024, 1024)
    dpt_layers: tuple[int, int, int, int] = (4, 11, 17, 23)

    # Track head: DPT feature extractor plus iterative tracker.
    track_features: int = 128
    track_iterations: int = 4
    track_stride: int = 2
    track_corr_levels: int = 7
    track_corr_radius: int = 4
    track_hidden_size: int = 384
    track_updateformer_depth: int = 6
    track_updateformer_num_heads: int = 8
    track_num_virtual_tracks: int = 64

    # Which heads exist.
    enable_camera: bool = True
    enable_depth: bool = True
    enable_point: bool = True
    enable_track: bool = True

    # Inference memory: the dense heads run this many frames at a time (None: all at once).
    frames_chunk_size: int | None = 8

    extra: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        check_config_values(self)
        self.dpt_out_channels = tuple(self.dpt_out_channels)
        self.dpt_layers = tuple(self.dpt_layers)
        divisible = [
            ("embed_dim", self.embed_dim, ("num_heads", "patch_embed_num_heads"), 4),
            ("2 * embed_dim", 2 * self.embed_dim, ("camera_num_heads",), 1),
            ("track_hidden_size", self.track_hidden_size, ("track_updateformer_num_heads",), 1),
            ("track_features", self.track_features, (), 4),
        ]
        for key, value, heads, multiple in divisible:
            if value % multiple or any(value % getattr(self, head) for head in heads):
                raise InputError(
                    "model config {key} ({value}) must be divisible by {heads}",
                    key=key,
                    value=value,
                    heads=" and ".join((*heads, *(["4"] if multiple > 1 else []))),
                )
        if len(self.dpt_layers) != 4 or max(self.dpt_layers) >= self.depth:
            raise InputError(
                "model config dpt_layers {layers} must name 4 aggregator blocks below depth {depth}",
                layers=self.dpt_layers,
                depth=self.depth,
            )
        parameters = approximate_parameters(self)
        if parameters > MAX_PARAMETERS:
            raise InputError(
                "model config sizes (embed_dim {width}, depth {depth}, ...) make about {count:.3g} parameters, more "
                "than the {limit:.3g} any VGGT checkpoint has; check the configuration",
                width=self.embed_dim,
                depth=self.depth,
                count=float(parameters),
                limit=float(MAX_PARAMETERS),
            )

    @property
    def default_resolution(self) -> int:
        """The input resolution (longest side) to run at when none is given: the training resolution."""
        return self.train_resolution or self.img_size

    @property
    def head_dim_in(self) -> int:
        """Width of the tokens the heads read: frame and global outputs concatenated."""
        return 2 * self.embed_dim

    @property
    def patch_start_idx(self) -> int:
        """Index of the first patch token: after 1 camera token and the register tokens."""
        return 1 + self.num_register_tokens

    def enabled_heads(self) -> tuple[str, ...]:
        """Names of the heads this configuration builds, in HEAD_NAMES order."""
        return tuple(name for name in HEAD_NAMES if getattr(self, f"enable_{name}"))

    def layers_needed(self, heads: Collection[str] | None = None) -> list[int]:
        """Aggregator outputs that `heads` (default: the enabled heads) read; the rest are dropped at inference."""
        heads = self.enabled_heads() if heads is None else heads
        needed: set[int] = set()
        if "camera" in heads:
            needed.add(self.depth - 1)
        if {"depth", "point", "track"} & set(heads):
            needed.update(self.dpt_layers)
        return sorted(needed)

    def to_dict(self) -> dict[str, Any]:
        d = dataclasses.asdict(self)
        d["dpt_out_channels"] = list(self.dpt_out_channels)
        d["dpt_layers"] = list(self.dpt_layers)
        return d

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> VGGTConfig:
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(d) - known)
        if unknown:
            raise ValueError(f"Unknown VGGT config keys {unknown}; known keys are {sorted(known)}")
        return cls(**d)


# Bounds on the values of a configuration (it may come from a checkpoint's config.json): every size is checked
# before anything is allocated, so that a hostile or broken file is one line naming the key, not an overflow, a
# division by zero or hours of building a model that cannot fit.
MAX_SIZE = 1 << 16  # any width, count or image size
MAX_DEPTH = 1024  # any number of blocks or iterations
MAX_RATIO = 64.0  # MLP ratios
MAX_PARAMETERS = 20 * 10**9  # VGGT-1B has 1.3e9
NON_NEGATIVE_SIZES = ("num_register_tokens", "track_corr_radius")
DEPTHS = ("patch_embed_depth", "depth", "camera_trunk_depth", "camera_iterations", "track_iterations",
          "track_updateformer_depth", "track_corr_levels")  # fmt: skip
SIZES = ("img_size", "patch_size", "embed_dim", "patch_embed_num_heads", "num_heads", "camera_num_heads",
         "dpt_features", "track_features", "track_stride", "track_hidden_size", "track_updateformer_num_heads",
         "track_num_virtual_tracks")  # fmt: skip
RATIOS = ("patch_embed_mlp_ratio", "mlp_ratio", "camera_mlp_ratio")
FINITE = ("patch_embed_layerscale", "layerscale", "rope_freq")


def _check_int(key: str, value: Any, low: int, high: int) -> None:
    if isinstance(value, bool) or not isinstance(value, int) or not low <= value <= high:
        raise InputError(
            "model config {key} must be an integer in [{low}, {high}], got {value!r}",
            key=key,
            low=low,
            high=high,
            value=value,
        )


def check_config_values(config: VGGTConfig) -> None:
    """Raise InputError naming the first key of `config` whose value is of the wrong type or out of bounds."""
    for key in SIZES:
        _check_int(key, getattr(config, key), 1, MAX_SIZE)
    for key in NON_NEGATIVE_SIZES:
        _check_int(key, getattr(config, key), 0, MAX_SIZE)
    for key in DEPTHS:
        _check_int(key, getattr(config, key), 1, MAX_DEPTH)
    for key in ("train_resolution", "frames_chunk_size"):
        if getattr(config, key) is not None:
            _check_int(key, getattr(config, key), 1, MAX_SIZE)
    for key in RATIOS + FINITE:
        value = getattr(config, key)
        high = MAX_RATIO if key in RATIOS else 1e12
        if isinstance(value, bool) or not isinstance(value, (int, float)) or not 0 < value <= high:
            raise InputError(
                "model config {key} must be a number in (0, {high:g}], got {value!r}", key=key, high=high, value=value
            )
    for key in ("dpt_out_channels", "dpt_layers"):
        values = getattr(config, key)
        if not isinstance(values, (list, tuple)) or len(values) != 4:
            raise InputError("model config {key} must be 4 integers, got {value!r}", key=key, value=values)
        for value in values:
            _check_int(key, value, 0 if key == "dpt_layers" else 1, MAX_SIZE)
    for name in HEAD_NAMES:
        if not isinstance(getattr(config, f"enable_{name}"), bool):
            raise InputError("model config enable_{name} must be true or false", name=name)


def approximate_parameters(config: VGGTConfig) -> int:
    """The model's parameter count to within a small factor (attention and MLP weights of every block, the
    patch encoder's position grid, the dense heads), in exact integers."""
    width, dense = config.embed_dim, config.dpt_features
    encoder = config.patch_embed_depth * (4 + 2 * config.patch_embed_mlp_ratio) * width**2
    grid = (config.img_size // config.patch_size + 1) ** 2 * width
    aggregator = 2 * config.depth * (4 + 2 * config.mlp_ratio) * width**2
    camera = config.camera_trunk_depth * (4 + 2 * config.camera_mlp_ratio) * (2 * width) ** 2
    heads = sum(2 * width * c + 9 * c * dense for c in config.dpt_out_channels) * 2 + 9 * dense**2 * 8
    return int(encoder + grid + aggregator + camera + heads)


PRESETS: dict[str, VGGTConfig] = {
    "vggt-1b": VGGTConfig(),
    # The configuration of ../shared/golden/tiny_config.json: a few MB, for tests and CPU demos.
    "tiny": VGGTConfig(
        embed_dim=64,
        patch_embed_depth=2,
        patch_embed_num_heads=4,
        depth=4,
        num_heads=4,
        camera_trunk_depth=2,
        camera_num_heads=4,
        dpt_features=32,
        dpt_out_channels=(16, 32, 64, 64),
        dpt_layers=(0, 1, 2, 3),
        track_features=32,
        track_corr_levels=3,
        track_corr_radius=2,
        track_hidden_size=64,
        track_updateformer_depth=2,
        track_num_virtual_tracks=64,
    ),
}


def get_preset(name: str) -> VGGTConfig:
    """A fresh copy of a named preset's config."""
    if name not in PRESETS:
        raise InputError("Unknown preset {name!r}; choose one of {choices}", name=name, choices=sorted(PRESETS))
    return dataclasses.replace(PRESETS[name], extra=dict(PRESETS[name].extra))


def config_from_reference_arguments(reference: dict[str, Any], config: VGGTConfig | None) -> VGGTConfig:
    """The config of `VGGT(...)`: the reference's arguments alone, or over `config` where they differ from the
    reference's defaults. A config passed in the first position (`VGGT(config)`) arrives as `img_size`."""
    if isinstance(reference.get("img_size"), VGGTConfig):
        if config is not None:
            raise TypeError("VGGT() got a config twice: positionally and as config=")
        config = reference.pop("img_size")
    if config is None:
        return VGGTConfig(**reference)
    changed = {k: v for k, v in reference.items() if v != REFERENCE_DEFAULTS[k]}
    return dataclasses.replace(config, **changed)


# The reference Aggregator's `patch_embed` names: the DINOv2 backbones with registers it can build, as
# (embed_dim, depth, num_heads) of the patch encoder.
DINOV2_PATCH_EMBEDS = {
    "dinov2_vits14_reg": (384, 12, 6),
    "dinov2_vitb14_reg": (768, 12, 12),
    "dinov2_vitl14_reg": (1024, 24, 16),
}


def aggregator_config(
    img_size: int = 518,
    patch_size: int = 14,
    embed_dim: int = 1024,
    depth: int = 24,
    num_heads: int = 16,
    mlp_ratio: float = 4.0,
    num_register_tokens: int = 4,
    patch_embed: str = "dinov2_vitl14_reg",
    aa_order: Sequence[str] = ("frame", "global"),
    aa_block_size: int = 1,
    qk_norm: bool = True,
    rope_freq: float = 100,
    init_values: float = 0.01,
    unsupported: dict[str, bool] | None = None,
) -> VGGTConfig:
    """The VGGTConfig of the reference's `Aggregator(...)` arguments; arguments it cannot honour are refused.

    `unsupported` maps the names of other reference arguments to whether they were given a value this
    implementation does not build (a custom `block_fn`, biases switched off).
    """
    refused = sorted(name for name, given in (unsupported or {}).items() if given)
    if tuple(aa_order) != ("frame", "global") or aa_block_size != 1:
        refused.append("aa_order/aa_block_size")
    if patch_embed not in DINOV2_PATCH_EMBEDS:
        refused.append(f"patch_embed={patch_embed!r}")
    if refused:
        raise InputError(
            "Aggregator cannot build {refused}: it implements alternating frame/global blocks of size 1 with "
            "biases and a DINOv2 patch encoder ({choices}); leave those arguments at their defaults",
            refused=", ".join(refused),
            choices=", ".join(DINOV2_PATCH_EMBEDS),
        )
    backbone_dim, backbone_depth, backbone_heads = DINOV2_PATCH_EMBEDS[patch_embed]
    if backbone_dim != embed_dim:
        raise InputError(
            "patch_embed={patch_embed} makes {backbone_dim}-wide tokens but embed_dim is {embed_dim}; pass "
            "matching values",
            patch_embed=patch_embed,
            backbone_dim=backbone_dim,
            embed_dim=embed_dim,
        )
    return VGGTConfig(
        img_size=img_size,
        patch_size=patch_size,
        embed_dim=embed_dim,
        depth=depth,
        num_heads=num_heads,
        mlp_ratio=mlp_ratio,
        num_register_tokens=num_register_tokens,
        patch_embed_depth=backbone_depth,
        patch_embed_num_heads=backbone_heads,
        qk_norm=qk_norm,
        rope_freq=rope_freq,
        layerscale=init_values,
        dpt_layers=tuple(min(i, depth - 1) for i in (4, 11, 17, 23)),
    )
