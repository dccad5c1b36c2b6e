"""The reference's layer and tracker names behave as their arguments say (test_compat_surface.py checks only that
they exist with the reference's signatures)."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from vggt.errors import InputError
from vggt.heads.dpt_head import FeatureFusionBlock, custom_interpolate
from vggt.heads.head_act import activate_pose, base_pose_act
from vggt.heads.track_modules.utils import (
    bilinear_sampler,
    get_2d_embedding,
    get_2d_sincos_pos_embed,
    get_2d_sincos_pos_embed_from_grid,
    sample_features4d,
)
from vggt.layers.attention import MemEffAttention
from vggt.layers.block import Block, NestedTensorBlock
from vggt.layers.layer_scale import LayerScale
from vggt.layers.patch_embed import PatchEmbed
from vggt.layers.swiglu_ffn import SwiGLUFFNFused
from vggt.layers.vision_transformer import DinoVisionTransformer, vit_small


def _tiny_vit(**kwargs) -> DinoVisionTransformer:
    """A 4-block, 64-wide DINOv2 ViT with the reference's defaults unless `kwargs` say otherwise."""
    options = {"img_size": 56, "patch_size": 14, "embed_dim": 64, "depth": 4, "num_heads": 4, **kwargs}
    return DinoVisionTransformer(num_register_tokens=2, init_values=1.0, **options).eval()


def test_block_chunks_number_blocks_as_dinov2_and_compute_the_same() -> None:
    torch.manual_seed(0)
    flat, chunked = _tiny_vit(block_chunks=0), _tiny_vit(block_chunks=2)  # the reference's default is 1 chunk
    assert "blocks.3.norm1.weight" in flat.state_dict()
    assert "blocks.0.1.norm1.weight" in chunked.state_dict() and "blocks.1.3.norm1.weight" in chunked.state_dict()
    renamed = {key.replace("blocks.", "", 1).split(".", 1)[1] if key.startswith("blocks.") else key: value
               for key, value in chunked.state_dict().items()}  # fmt: skip
    flat.load_state_dict({(f"blocks.{k}" if k[0].isdigit() else k): v for k, v in renamed.items()})
    images = torch.rand(2, 3, 56, 84)
    torch.testing.assert_close(flat(images), chunked(images))


def test_position_offset_and_antialias_change_the_resampled_table_only_off_grid() -> None:
    torch.manual_seed(0)
    reference, vggt_like = _tiny_vit(), _tiny_vit(interpolate_offset=0.0, interpolate_antialias=True)
    vggt_like.load_state_dict(reference.state_dict())
    same_grid = torch.rand(1, 3, 56, 56)
    torch.testing.assert_close(reference(same_grid), vggt_like(same_grid))
    other_grid = torch.rand(1, 3, 70, 42)
    assert not torch.allclose(reference(other_grid), vggt_like(other_grid))
    assert reference.interpolate_pos_encoding(5, 3).shape == (1, 1 + 15, 64)
    assert vit_small(patch_size=14, img_size=56).blocks[0][11].attn.num_heads == 6  # ViT-S: 12 blocks, 6 heads


def test_ffn_layer_and_drop_path_rate_build_what_they_name() -> None:
    model = _tiny_vit(ffn_layer="swiglufused", drop_path_rate=0.3)
    mlp = model.blocks[0][0].mlp  # one chunk: blocks.0.<i>
    assert isinstance(mlp, SwiGLUFFNFused) and mlp.w3.in_features == 176  # 2/3 of 4 * 64, rounded up to 8
    assert [float(block.drop_path1.drop_prob) for block in model.blocks[0][1:]] == pytest.approx([0.1, 0.2, 0.3])
    images = torch.rand(2, 3, 56, 56)
    model.eval()
    torch.testing.assert_close(model(images), model(images))  # no stochastic depth outside training
    with pytest.raises(InputError, match="ffn_layer"):
        _tiny_vit(ffn_layer="moe")


def test_block_takes_the_reference_classes_and_lists_of_tokens() -> None:
    torch.manual_seed(0)
    block = NestedTensorBlock(64, 4, attn_class=MemEffAttention, ffn_layer=SwiGLUFFNFused, init_values=1e-2).eval()
    plain = Block(64, 4, attn_class=MemEffAttention, ffn_layer=SwiGLUFFNFused, init_values=1e-2).eval()
    plain.load_state_dict(block.state_dict())
    tokens = [torch.rand(2, 5, 64), torch.rand(1, 7, 64)]
    outputs = block(tokens)
    for x, out in zip(tokens, outputs, strict=True):
        torch.testing.assert_close(out, plain(x))
    norm = Block(64, 4, norm_layer=lambda dim: nn.LayerNorm(dim, eps=1e-3))
    assert norm.norm1.eps == 1e-3
    with pytest.raises(InputError, match="attn_bias"):
        block.attn(tokens[0], attn_bias=torch.zeros(1))


def test_patch_embed_layer_scale_and_interpolation_options() -> None:
    embed = PatchEmbed(img_size=(28, 42), patch_size=14, embed_dim=8, norm_layer=nn.LayerNorm, flatten_embedding=False)
    assert embed.patches_resolution == (2, 3) and embed.num_patches == 6
    assert embed(torch.rand(2, 3, 28, 42)).shape == (2, 2, 3, 8)
    scale = LayerScale(4, init_values=0.5, inplace=True)
    x = torch.ones(2, 4)
    with torch.no_grad():
        assert scale(x) is x and torch.equal(x, torch.full((2, 4), 0.5))
    maps = torch.rand(2, 3, 5, 7)
    assert custom_interpolate(maps, scale_factor=2).shape == (2, 3, 10, 14)
    nearest = custom_interpolate(maps, size=(10, 14), mode="nearest", align_corners=None)
    torch.testing.assert_close(nearest[..., ::2, ::2], maps)
    fusion = FeatureFusionBlock(3, nn.ReLU(inplace=True), has_residual=False, size=(4, 4))
    assert fusion(maps).shape == (2, 3, 4, 4)
    with pytest.raises(InputError, match="batch norm"):
        FeatureFusionBlock(3, nn.ReLU(), bn=True)


def test_pose_activations_under_the_reference_names() -> None:
    encoding = torch.tensor([[1.0, -2.0, 0.5, 0.1, 0.2, 0.3, 0.9, 0.0, -1.0]])
    assert torch.equal(base_pose_act(encoding, "relu"), encoding.clamp(min=0))
    activated = activate_pose(pred_pose_enc=encoding, trans_act="linear", quat_act="linear", fl_act="exp")
    torch.testing.assert_close(activated[:, 7:], encoding[:, 7:].exp())


def test_track_embeddings_follow_the_grid_and_the_coordinates() -> None:
    embedding, grid = get_2d_sincos_pos_embed(16, (3, 5), return_grid=True)
    assert embedding.shape == (1, 16, 3, 5) and grid.shape == (2, 1, 3, 5)
    assert grid[0, 0, 2, 4] == 4 and grid[1, 0, 2, 4] == 2  # (x, y) planes
    from_grid = get_2d_sincos_pos_embed_from_grid(16, grid)  # [1, H * W, 16]
    torch.testing.assert_close(from_grid.reshape(1, 3, 5, 16).permute(0, 3, 1, 2), embedding)
    xy = torch.tensor([[[0.0, 0.0], [3.0, 1.0]]])
    plain = get_2d_embedding(xy, 8, cat_coords=False)
    assert plain.shape == (1, 2, 16) and torch.equal(plain[0, 0, 0::2], torch.zeros(8))  # sin(0) everywhere
    torch.testing.assert_close(get_2d_embedding(xy, 8)[..., :2], xy)


def test_bilinear_sampler_pixel_conventions() -> None:
    image = torch.arange(2 * 3 * 4 * 5, dtype=torch.float32).reshape(2, 3, 4, 5)
    at = torch.tensor([[[[4.0, 3.0], [1.0, 2.0]]]]).expand(2, 1, 2, 2)  # (x, y) pixel centres
    sampled = bilinear_sampler(image, at)  # [B, C, 1, 2]
    torch.testing.assert_close(sampled[:, :, 0, 0], image[:, :, 3, 4])
    torch.testing.assert_close(sampled[:, :, 0, 1], image[:, :, 2, 1])
    torch.testing.assert_close(bilinear_sampler(image, at + 0.5, align_corners=False), sampled)  # edges at 0, W
    volume = torch.rand(1, 2, 3, 4, 5)
    txy = torch.tensor([2.0, 4.0, 1.0]).reshape(1, 1, 1, 1, 3)
    torch.testing.assert_close(bilinear_sampler(volume, txy)[0, :, 0, 0, 0], volume[0, :, 2, 1, 4])
    points = torch.tensor([[[4.0, 3.0], [1.0, 2.0]]]).expand(2, 2, 2)
    torch.testing.assert_close(sample_features4d(image, points), sampled[:, :, 0].transpose(1, 2))


def test_tracker_blocks_refuse_what_they_cannot_build() -> None:
    from vggt.dependency.track_modules.blocks import EfficientUpdateFormer as VGGSfMUpdateFormer
    from vggt.heads.track_modules.blocks import EfficientUpdateFormer
    from vggt.heads.track_modules.modules import CrossAttnBlock, Mlp, ResidualBlock

    with pytest.raises(InputError, match="space_depth"):
        EfficientUpdateFormer(space_depth=3, time_depth=6)
    with pytest.raises(InputError, match="space_depth"):
        VGGSfMUpdateFormer(space_depth=3, time_depth=6)
    with pytest.raises(InputError, match="context_dim"):
        CrossAttnBlock(32, 16, num_heads=4)
    with pytest.raises(InputError, match="use_conv"):
        Mlp(8, use_conv=True)
    for norm_fn, norm in (("group", nn.GroupNorm), ("batch", nn.BatchNorm2d), ("none", nn.Identity)):
        block = ResidualBlock(16, 32, norm_fn=norm_fn, stride=2).eval()
        assert isinstance(block.norm1, norm) and block(torch.rand(1, 16, 8, 8)).shape == (1, 32, 4, 4)
    with pytest.raises(InputError, match="norm_fn"):
        ResidualBlock(16, 16, norm_fn="layer")
