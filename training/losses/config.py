"""The `loss:` section of a training config.

It reads the reference's section as it is (facebookresearch/vggt `training/config/default.yaml`):

    loss:
      _target_: loss.MultitaskLoss          # accepted and ignored
      averaging: batch                      # ours: batch (the reference's) | per_sample
      camera: {weight: 5.0, loss_type: l1}
      depth: {weight: 1.0, gradient_loss_fn: grad, valid_range: 0.98}
      point: null                           # null (or `enabled: false`) switches a term off
      track: {weight: 0.05}                 # ours: the reference's track loss is unfinished

A term left out of the section is on with the defaults below, which are those of the reference's loss
functions (so a section copied from the reference gives the reference's numbers).

`averaging: batch` is the reference's recipe (`training.losses.reference`). `averaging: per_sample` is the
paper's formulas averaged per sample (`training.losses.per_sample`), which gives a global batch the same loss
however it is split over processes; it has no batch-wide quantile filtering, one gradient term of its own
(weighted by `gradient_weight`) and the l1 camera loss, so it refuses `valid_range`, `gradient_loss_fn` and
`loss_type` values that ask for anything else.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

BATCH_AVERAGING = "batch"
PER_SAMPLE_AVERAGING = "per_sample"
AVERAGING_MODES = (BATCH_AVERAGING, PER_SAMPLE_AVERAGING)
CAMERA_LOSS_TYPES = ("l1", "l2")
GRADIENT_LOSS_FNS = ("grad", "grad+conf", "normal", "normal+conf")
POSE_ENCODING_TYPE = "absT_quaR_FoV"
TERM_NAMES = ("camera", "depth", "point", "track")
# Keys of the reference's config that name which class to build; they carry no setting.
IGNORED_KEYS = ("_target_",)


@dataclass
class CameraLossConfig:
    weight: float = 1.0
    loss_type: str = "l1"  # l1: per-component absolute error; l2: Euclidean norm per part (T, R, FL)
    gamma: float = 0.6  # iteration i of n weighs gamma^(n-1-i)
    weight_trans: float = 1.0
    weight_rot: float = 1.0
    weight_focal: float = 0.5
    pose_encoding_type: str = POSE_ENCODING_TYPE


@dataclass
class DenseLossConfig:
    weight: float = 1.0
    gamma: float = 1.0  # weight of C ||pred - gt||
    alpha: float = 0.2  # weight of the -log C confidence regulariser
    gradient_loss_fn: str | None = None  # batch averaging: one of GRADIENT_LOSS_FNS, or None for no gradient term
    valid_range: float = -1.0  # batch averaging: quantile above which per-pixel losses are dropped (<= 0: none)
    gradient_weight: float = 1.0  # per_sample averaging only: weight of its gradient term


@dataclass
class TrackLossConfig:
    weight: float = 0.05
    gamma: float = 0.8
    visibility_weight: float = 1.0
    num_queries: int = 64  # query points drawn in the first frame per sample
    depth_tolerance: float = 0.05  # relative depth disagreement above which a reprojection counts as occluded


SECTION_CLASSES = {"camera": CameraLossConfig, "depth": DenseLossConfig, "point": DenseLossConfig,
                   "track": TrackLossConfig}  # fmt: skip


@dataclass
class LossConfig:
    """Averaging mode and one section per term; a section that is None is switched off."""

    averaging: str = BATCH_AVERAGING
    camera: CameraLossConfig | None = field(default_factory=CameraLossConfig)
    depth: DenseLossConfig | None = field(default_factory=DenseLossConfig)
    point: DenseLossConfig | None = field(default_factory=DenseLossConfig)
    track: TrackLossConfig | None = field(default_factory=TrackLossConfig)

    def __post_init__(self) -> None:
        if self.averaging not in AVERAGING_MODES:
            raise ValueError(f"loss.averaging must be one of {list(AVERAGING_MODES)}, got {self.averaging!r}")
        if self.camera is not None:
            _check_camera(self.camera, self.averaging)
        for name in ("depth", "point"):
            section = getattr(self, name)
            if section is not None:
                _check_dense(name, section, self.averaging)

    @classmethod
    def from_dict(cls, d: Mapping[str, Any] | None) -> LossConfig:
        d = {key: value for key, value in (d or {}).items() if key not in IGNORED_KEYS}
        averaging = d.pop("averaging", BATCH_AVERAGING)
        unknown = sorted(set(d) - set(TERM_NAMES))
        if unknown:
            raise ValueError(f"unknown loss terms {unknown}; known terms are {sorted(TERM_NAMES)} and 'averaging'")
        sections: dict[str, Any] = {}
        for name in TERM_NAMES:
            sections[name] = _section(name, d[name], averaging) if name in d else SECTION_CLASSES[name]()
        return cls(averaging=averaging, **sections)

    def enabled(self, name: str) -> bool:
        return getattr(self, name) is not None


def _section(name: str, values: Mapping[str, Any] | None, averaging: str) -> Any:
    if values is None:
        return None
    if not isinstance(values, Mapping):
        raise ValueError(f"loss.{name} must be a mapping of settings or null, got {values!r}")
    values = dict(values)
    if not values.pop("enabled", True):
        return None
    if averaging == BATCH_AVERAGING and "gradient_weight" in values:
        raise ValueError(
            f"loss.{name}.gradient_weight belongs to loss.averaging: per_sample; with batch averaging choose the "
            "gradient term with gradient_loss_fn (grad, grad+conf, normal, normal+conf)"
        )
    try:
        return SECTION_CLASSES[name](**values)
    except TypeError as err:
        known = [f.name for f in dataclasses.fields(SECTION_CLASSES[name])]
        raise ValueError(f"loss.{name}: {err}; known keys are {known}") from None


def _check_camera(section: CameraLossConfig, averaging: str) -> None:
    if section.loss_type not in CAMERA_LOSS_TYPES:
        raise ValueError(f"loss.camera.loss_type must be one of {list(CAMERA_LOSS_TYPES)}, got {section.loss_type!r}")
    if section.pose_encoding_type != POSE_ENCODING_TYPE:
        raise ValueError(
            f"loss.camera.pose_encoding_type must be {POSE_ENCODING_TYPE!r}, got {section.pose_encoding_type!r}"
        )
    if averaging == PER_SAMPLE_AVERAGING and section.loss_type != "l1":
        raise ValueError(
            f"loss.camera.loss_type={section.loss_type!r} needs loss.averaging: batch; per_sample has the l1 loss only"
        )


def _check_dense(name: str, section: DenseLossConfig, averaging: str) -> None:
    fn = section.gradient_loss_fn
    if fn is not None and fn not in GRADIENT_LOSS_FNS:
        raise ValueError(f"loss.{name}.gradient_loss_fn must be one of {list(GRADIENT_LOSS_FNS)} or null, got {fn!r}")
    if section.valid_range >= 1:
        raise ValueError(f"loss.{name}.valid_range is a quantile below 1 (or <= 0 for none), got {section.valid_range}")
    if averaging != PER_SAMPLE_AVERAGING:
        return
    if section.valid_range > 0:
        raise ValueError(
            f"loss.{name}.valid_range={section.valid_range} needs loss.averaging: batch (the quantile ranks the "
            "pixels of the whole batch); set valid_range: -1 for per_sample averaging"
        )
    if fn is not None:
        raise ValueError(
            f"loss.{name}.gradient_loss_fn={fn!r} needs loss.averaging: batch; per_sample has one gradient term of "
            "its own, weighted by gradient_weight (set gradient_loss_fn: null)"
        )
