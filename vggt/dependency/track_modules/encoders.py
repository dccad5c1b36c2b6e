"""CNN feature encoders of the VGGSfM tracker: `BasicEncoder` for the coarse feature maps of whole images,
`ShallowEncoder` for the fine features of small patches. Both use instance norm without learned parameters."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from vggt.errors import InputError


def _resize(x: Tensor, height: int, width: int) -> Tensor:
    return F.interpolate(x, (height, width), mode="bilinear", align_corners=True)


class ResidualBlock(nn.Module):
    """Two 3x3 convolutions with instance norm and ReLU, plus a (strided 1x1 when downsampling) shortcut."""

    def __init__(self, in_planes: int, planes: int, stride: int = 1) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(in_planes, planes, kernel_size=3, padding=1, stride=stride)
        self.conv2 = nn.Conv2d(planes, planes, kernel_size=3, padding=1)
        self.relu = nn.ReLU(inplace=True)
        self.norm1 = nn.InstanceNorm2d(planes)
        self.norm2 = nn.InstanceNorm2d(planes)
        self.downsample = None
        if stride != 1:
            self.norm3 = nn.InstanceNorm2d(planes)
            self.downsample = nn.Sequential(nn.Conv2d(in_planes, planes, kernel_size=1, stride=stride), self.norm3)

    def forward(self, x: Tensor) -> Tensor:
        y = self.relu(self.norm1(self.conv1(x)))
        y = self.relu(self.norm2(self.conv2(y)))
        shortcut = x if self.downsample is None else self.downsample(x)
        return self.relu(shortcut + y)


def _init_convs(module: nn.Module) -> None:
    for m in module.modules():
        if isinstance(m, nn.Conv2d):
            nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")


class BasicEncoder(nn.Module):
    """[B, 3, H, W] -> [B, output_dim, H / stride, W / stride]: four residual stages fused at one resolution."""

    def __init__(self, input_dim: int = 3, output_dim: int = 128, stride: int = 4) -> None:
        super().__init__()
        self.stride = stride
        self.in_planes = output_dim // 2
        self.norm1 = nn.InstanceNorm2d(self.in_planes)
        self.norm2 = nn.InstanceNorm2d(output_dim * 2)
        self.conv1 = nn.Conv2d(input_dim, self.in_planes, kernel_size=7, stride=2, padding=3)
        self.relu1 = nn.ReLU(inplace=True)
        self.layer1 = self._make_layer(output_dim // 2, stride=1)
        self.layer2 = self._make_layer(output_dim // 4 * 3, stride=2)
        self.layer3 = self._make_layer(output_dim, stride=2)
        self.layer4 = self._make_layer(output_dim, stride=2)
        self.conv2 = nn.Conv2d(output_dim * 3 + output_dim // 4, output_dim * 2, kernel_size=3, padding=1)
        self.relu2 = nn.ReLU(inplace=True)
        self.conv3 = nn.Conv2d(output_dim * 2, output_dim, kernel_size=1)
        _init_convs(self)

    def _make_layer(self, dim: int, stride: int) -> nn.Sequential:
        layers = nn.Sequential(ResidualBlock(self.in_planes, dim, stride=stride), ResidualBlock(dim, dim))
        self.in_planes = dim
        return layers

    def forward(self, x: Tensor) -> Tensor:
        height, width = x.shape[-2] // self.stride, x.shape[-1] // self.stride
        x = self.relu1(self.norm1(self.conv1(x)))
        stages = []
        for layer in (self.layer1, self.layer2, self.layer3, self.layer4):
            x = layer(x)
            stages.append(x)
        fused = torch.cat([_resize(s, height, width) for s in stages], dim=1)
        return self.conv3(self.relu2(self.norm2(self.conv2(fused))))


class ShallowEncoder(nn.Module):
    """[B, 3, H, W] -> [B, output_dim, H / stride, W / stride]: a light two-stage encoder for image patches."""

    def __init__(self, input_dim: int = 3, output_dim: int = 32, stride: int = 1, norm_fn: str = "instance") -> None:
        super().__init__()
        if norm_fn != "instance":
            raise InputError(
                f"ShallowEncoder normalises by instance (as the released tracker); got norm_fn={norm_fn!r}"
            )
        self.stride = stride
        self.norm1 = nn.InstanceNorm2d(output_dim)
        self.norm2 = nn.InstanceNorm2d(output_dim * 2)  # unused, kept as in the released model
        self.conv1 = nn.Conv2d(input_dim, output_dim, kernel_size=3, stride=2, padding=1)
        self.relu1 = nn.ReLU(inplace=True)
        self.layer1 = ResidualBlock(output_dim, output_dim, stride=2)
        self.layer2 = ResidualBlock(output_dim, output_dim, stride=2)
        self.conv2 = nn.Conv2d(output_dim, output_dim, kernel_size=1)
        _init_convs(self)

    def forward(self, x: Tensor) -> Tensor:
        height, width = x.shape[-2:]
        x = self.relu1(self.norm1(self.conv1(x)))
        stage = self.layer1(x)
        x = x + _resize(stage, *x.shape[-2:])
        x = x + _resize(self.layer2(stage), *x.shape[-2:])
        x = self.conv2(x) + x
        return _resize(x, height // self.stride, width // self.stride)
