"""Write the golden data of tests/test_models_omega.py and tests/test_models_pi3.py from the REFERENCE code.

Run with the reference checkouts importable (nothing of `vggt` is imported here):

    PYTHONPATH=/path/to/vggt-omega:/path/to/Pi3 python scripts/make_family_goldens.py tests/data/family_goldens
    PYTHONPATH=... python scripts/make_family_goldens.py /tmp/full --full   # the released sizes once (gigabytes)

The small configurations keep the references' own classes and forward code and only shrink the sizes their
constructors fix (through `functools.partial` on the names their modules look up). Every parameter is then
drawn at random (seeded), so that no layer sits at an identity-like initialisation; buffers keep the values a
released checkpoint carries. Each golden folder holds `weights.safetensors` (the state dict under the reference's
own key names), `io.safetensors` (inputs and outputs) and `keys.txt` (the key manifest of the released size,
from the reference's module definitions, built on the meta device).
"""

from __future__ import annotations

import argparse
import copy
import functools
import json
import subprocess
import time
from pathlib import Path

import torch
from safetensors.torch import save_file

SEED = 0


def randomise(model: torch.nn.Module, seed: int = SEED) -> None:
    """Every parameter drawn from a seeded normal: norms and layer scales around 1 and 0.5, the rest around 0."""
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, param in sorted(model.named_parameters()):
            noise = torch.randn(param.shape, generator=generator)
            leaf = name.rsplit(".", 1)[-1]
            if "norm" in name and leaf == "weight":
                param.copy_(1.0 + 0.1 * noise)
            elif leaf == "gamma":
                param.copy_(0.5 + 0.1 * noise)
            else:
                fan_in = param[0].numel() if param.dim() > 1 else 16
                param.copy_(noise / max(fan_in, 1) ** 0.5)
        for name, buffer in model.named_buffers():
            if name.endswith("bias_mask"):  # the released pattern: no key bias
                buffer.fill_(1.0)
                third = buffer.numel() // 3
                buffer[third : 2 * third] = 0.0
        for param in model.parameters():  # stored as float16: round now so that the golden runs on those values
            param.copy_(param.half().float())


def key_manifest(model: torch.nn.Module) -> str:
    return "".join(f"{k}\t{tuple(v.shape)}\n" for k, v in model.state_dict().items())


def git_commit(module) -> str:
    root = Path(module.__file__).resolve().parents[2]
    try:
        return subprocess.check_output(["git", "-C", str(root), "rev-parse", "HEAD"], text=True).strip()
    except (OSError, subprocess.CalledProcessError):
        return "unknown"


def write_golden(folder: Path, model, inputs: dict, outputs: dict, manifest: str, meta: dict) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    parameters = {name for name, _ in model.named_parameters()}
    weights = {k: (v.half() if k in parameters else v).contiguous() for k, v in model.state_dict().items()}
    save_file(weights, str(folder / "weights.safetensors"))
    tensors = {f"input.{k}": v for k, v in inputs.items()} | {f"output.{k}": v for k, v in outputs.items()}
    save_file({k: v.detach().float().contiguous() for k, v in tensors.items()}, str(folder / "io.safetensors"))
    (folder / "keys.txt").write_text(manifest)
    (folder / "meta.json").write_text(json.dumps(meta, indent=2, sort_keys=True) + "\n")


# ------------------------------------------------------------------------------------------ VGGT-Omega

OMEGA_TINY = dict(embed_dim=32, encoder_depth=2, encoder_heads=4, depth=4, heads=4, registers=3, register_blocks=[1])
OMEGA_DENSE = dict(features=16, out_channels=[8, 16, 32, 32], intermediate_layer_idx=[0, 1, 2, 3])


def omega_small_patches():
    """Shrink the sizes that vggt-omega's constructors fix, keeping its classes and forward code."""
    import vggt_omega.models.aggregator as agg
    import vggt_omega.models.vggt_omega as top
    from vggt_omega.models.layers.vision_transformer import DinoVisionTransformer

    t = OMEGA_TINY

    def small_patch_embed(patch_size: int, embed_dim: int):
        model = DinoVisionTransformer(
            img_size=224, patch_size=patch_size, in_chans=3, pos_embed_rope_base=100,
            pos_embed_rope_normalize_coords="max", pos_embed_rope_dtype="fp32", embed_dim=embed_dim,
            depth=t["encoder_depth"], num_heads=t["encoder_heads"], ffn_ratio=4, qkv_bias=True, drop_path_rate=0.0,
            layerscale_init=1.0e-5, norm_layer="layernormbf16", ffn_layer="mlp", ffn_bias=True, proj_bias=True,
            n_storage_tokens=4, mask_k_bias=True,
        )  # fmt: skip
        model.init_weights()
        return model

    agg._build_patch_embed = small_patch_embed
    top.Aggregator = functools.partial(
        agg.Aggregator, depth=t["depth"], num_heads=t["heads"], num_register_tokens=t["registers"],
        register_attention_block_indices=t["register_blocks"], cached_layer_indices=(0, 1, 2, 3),
    )  # fmt: skip
    top.DenseHead = functools.partial(top.DenseHead, **OMEGA_DENSE)


def omega_goldens(out: Path) -> None:
    import vggt_omega.models.vggt_omega as top

    released = {}
    for text in (False, True):
        with torch.device("meta"):
            released[text] = key_manifest(top.VGGTOmega(enable_alignment=text))
    omega_small_patches()
    generator = torch.Generator().manual_seed(SEED + 1)
    for name, text in (("vggt-omega-tiny", False), ("vggt-omega-text-tiny", True)):
        model = top.VGGTOmega(patch_size=16, embed_dim=OMEGA_TINY["embed_dim"], enable_alignment=text)
        randomise(model)
        model.eval()
        images = torch.rand(1, 3, 3, 48, 64, generator=generator)
        with torch.no_grad():
            outputs = model(images)
        outputs = {k: v for k, v in outputs.items() if k != "images"}
        from vggt_omega.utils.pose_enc import encoding_to_camera

        extrinsics, intrinsics = encoding_to_camera(outputs["pose_enc"], images.shape[-2:])
        outputs |= {"extrinsics": extrinsics, "intrinsics": intrinsics}
        meta = {"reference": "facebookresearch/vggt-omega", "commit": git_commit(top), "tiny": OMEGA_TINY}
        meta |= {"dense": OMEGA_DENSE, "enable_alignment": text}
        write_golden(out / name, model, {"images": images}, outputs, released[text], meta)
        print(name, {k: tuple(v.shape) for k, v in outputs.items()})


def full_runs(out: Path) -> dict:
    """The released sizes once, on seeded random weights, at 2 small frames: weights, inputs and outputs into
    `out/<name>-full/` (not committed: gigabytes) and summary numbers."""
    import vggt_omega.models.vggt_omega as omega
    from pi3.models.pi3 import Pi3
    from pi3.models.pi3x import Pi3X

    summaries = {}
    builders = (("vggt-omega-1b-512", omega.VGGTOmega, (64, 96)), ("pi3", Pi3, (56, 70)), ("pi3x", Pi3X, (56, 70)))
    for name, build, (height, width) in builders:
        model = build()
        randomise(model)
        model.eval()
        images = torch.rand(1, 2, 3, height, width, generator=torch.Generator().manual_seed(SEED + 2))
        start = time.perf_counter()
        with torch.no_grad():
            outputs = {k: v for k, v in model(images).items() if k != "images"}
        seconds = time.perf_counter() - start
        write_golden(out / f"{name}-full", model, {"images": images}, outputs, key_manifest(model), {"name": name})
        summaries[name] = {
            "parameters": sum(p.numel() for p in model.parameters()),
            "forward_seconds": round(seconds, 2),
            **{f"{k}_mean": v.double().mean().item() for k, v in outputs.items() if v.is_floating_point()},
        }
        del model, outputs
    return summaries


# ------------------------------------------------------------------------------------------ Pi3

PI3_TINY = dict(encoder_dim=32, encoder_depth=2, encoder_heads=2, decoder_dim=32, decoder_depth=4, decoder_heads=2)
PI3_TINY |= dict(head_dim=32, head_depth=2, head_heads=2, camera_dim=16)


def pi3_small(model) -> None:
    """Replace the sized parts of a reference Pi3 by the reference's own classes at PI3_TINY sizes."""
    from functools import partial

    from pi3.models.dinov2.hub.backbones import dinov2_vitl14_reg
    from pi3.models.dinov2.layers import MemEffAttention, Mlp, NestedTensorBlock
    from pi3.models.dinov2.models import vision_transformer as vits
    from pi3.models.dinov2.models.vision_transformer import DinoVisionTransformer
    from pi3.models.layers.attention import FlashAttentionRope
    from pi3.models.layers.block import BlockRope
    from pi3.models.layers.camera_head import CameraHead
    from pi3.models.layers.transformer_head import LinearPts3d, TransformerDecoder

    t = PI3_TINY
    # The reference's own hub function decides the encoder's settings (registers, position resampling); only the
    # ViT-L sizes it asks for are shrunk.
    small_vit = partial(
        DinoVisionTransformer, embed_dim=t["encoder_dim"], depth=t["encoder_depth"], num_heads=t["encoder_heads"],
        mlp_ratio=4, block_fn=partial(NestedTensorBlock, attn_class=MemEffAttention),
    )  # fmt: skip
    vits.vit_large, released_vit_large = small_vit, vits.vit_large
    try:
        model.encoder = dinov2_vitl14_reg(pretrained=False)
    finally:
        vits.vit_large = released_vit_large
    del model.encoder.mask_token
    model.decoder = torch.nn.ModuleList(
        BlockRope(
            dim=t["decoder_dim"], num_heads=t["decoder_heads"], mlp_ratio=4, qkv_bias=True, proj_bias=True,
            ffn_bias=True, drop_path=0.0, norm_layer=partial(torch.nn.LayerNorm, eps=1e-6), act_layer=torch.nn.GELU,
            ffn_layer=Mlp, init_values=0.01, qk_norm=True, attn_class=FlashAttentionRope, rope=model.rope,
        )
        for _ in range(t["decoder_depth"])
    )  # fmt: skip
    model.dec_embed_dim = t["decoder_dim"]
    model.register_token = torch.nn.Parameter(torch.zeros(1, 1, 5, t["decoder_dim"]))

    def head_decoder(out_dim):
        return TransformerDecoder(
            in_dim=2 * t["decoder_dim"], dec_embed_dim=t["head_dim"], depth=t["head_depth"],
            dec_num_heads=t["head_heads"], out_dim=out_dim, rope=model.rope,
        )  # fmt: skip

    model.point_decoder = head_decoder(t["head_dim"])
    model.point_head = LinearPts3d(patch_size=14, dec_embed_dim=t["head_dim"], output_dim=3)
    model.conf_decoder = head_decoder(t["head_dim"])
    model.conf_head = LinearPts3d(patch_size=14, dec_embed_dim=t["head_dim"], output_dim=1)
    model.camera_decoder = head_decoder(t["camera_dim"])
    model.camera_head = CameraHead(dim=t["camera_dim"])


def pi3_goldens(out: Path) -> None:
    import pi3.models.pi3 as top

    released = key_manifest(top.Pi3())  # on the CPU: DINOv2's constructor reads values (.item())
    model = top.Pi3(decoder_size="small")
    pi3_small(model)
    randomise(model)
    model.eval()
    generator = torch.Generator().manual_seed(SEED + 3)
    images = torch.rand(1, 3, 3, 42, 56, generator=generator)
    with torch.no_grad():
        outputs = model(images)
    meta = {"reference": "yyfz/Pi3", "commit": git_commit(top), "tiny": PI3_TINY}
    write_golden(out / "pi3-tiny", model, {"images": images}, outputs, released, meta)
    print("pi3-tiny", {k: tuple(v.shape) for k, v in outputs.items()})


# ------------------------------------------------------------------------------------------ Pi3X

PI3X_TINY = dict(upsample=[32, 16, 16], last_conv=8, metric_dim=16, metric_depth=2, metric_heads=2)


def pi3x_small(model) -> None:
    """Pi3's small parts, plus Pi3X's conditioning, convolutional and metric parts at PI3X_TINY sizes."""
    from functools import partial

    from pi3.models.dinov2.layers import Mlp, PatchEmbed
    from pi3.models.layers.block import PoseInjectBlock
    from pi3.models.layers.conv_head import ConvHead
    from pi3.models.layers.transformer_head import ContextOnlyTransformerDecoder

    pi3_small(model)
    t, x = PI3_TINY, PI3X_TINY
    model.depth_encoder = copy.deepcopy(model.encoder)
    model.depth_encoder.patch_embed = PatchEmbed(img_size=224, patch_size=14, in_chans=2, embed_dim=t["encoder_dim"])
    model.depth_emb = torch.nn.Parameter(torch.zeros(1, 1, t["encoder_dim"]))
    model.ray_embed = PatchEmbed(img_size=224, patch_size=14, in_chans=2, embed_dim=t["encoder_dim"])
    model.pose_inject_blk = torch.nn.ModuleList(
        PoseInjectBlock(
            dim=t["decoder_dim"], num_heads=t["decoder_heads"], mlp_ratio=4, qkv_bias=True, proj_bias=True,
            ffn_bias=True, drop_path=0.0, norm_layer=partial(torch.nn.LayerNorm, eps=1e-6), act_layer=torch.nn.GELU,
            ffn_layer=Mlp, init_values=0.01, qk_norm=True,
        )
        for _ in range(5)
    )  # fmt: skip

    def conv_head(dim_out):
        return ConvHead(
            num_features=4, dim_in=t["decoder_dim"], projects=torch.nn.Identity(), dim_out=dim_out,
            dim_proj=t["head_dim"], dim_upsample=x["upsample"], dim_times_res_block_hidden=2, num_res_blocks=2,
            res_block_norm="group_norm", last_res_blocks=0, last_conv_channels=x["last_conv"], last_conv_size=1,
            using_uv=True,
        )  # fmt: skip

    model.point_head = conv_head([2, 1])
    model.conf_head = conv_head([1])
    model.metric_token = torch.nn.Parameter(torch.zeros(1, 1, 2 * t["decoder_dim"]))
    model.metric_decoder = ContextOnlyTransformerDecoder(
        in_dim=2 * t["decoder_dim"], dec_embed_dim=x["metric_dim"], depth=x["metric_depth"],
        dec_num_heads=x["metric_heads"], out_dim=x["metric_dim"], rope=model.rope,
    )  # fmt: skip
    model.metric_head = torch.nn.Linear(x["metric_dim"], 1)


# The outputs kept of the pose-conditioned runs (the rest follow from them), to keep the golden small.
PI3X_POSE_OUTPUTS = ("local_points", "conf", "camera_poses", "metric")


def random_poses(frames: int, generator: torch.Generator) -> torch.Tensor:
    """Random camera-to-world poses [1, frames, 4, 4]: rotations from the QR decomposition of Gaussian matrices
    (determinant +1), translations of about 1 unit."""
    q, r = torch.linalg.qr(torch.randn(frames, 3, 3, generator=generator))
    rotation = q * torch.sign(torch.diagonal(r, dim1=-2, dim2=-1))[:, None, :]
    rotation = rotation * torch.linalg.det(rotation)[:, None, None]
    poses = torch.eye(4).repeat(frames, 1, 1)
    poses[:, :3, :3], poses[:, :3, 3] = rotation, torch.randn(frames, 3, generator=generator)
    return poses[None]


def pi3x_small_width_decode(top) -> None:
    """The reference's `Pi3X.decode` writes the released decoder width (1024) as a literal in its pose injection;
    the small run recompiles that method from its own source with the model's width `self.dec_embed_dim` there
    (nothing else changes)."""
    import inspect
    import textwrap

    source = textwrap.dedent(inspect.getsource(top.Pi3X.decode))
    patched = source.replace("-1, 1024)", "-1, self.dec_embed_dim)")
    assert patched.count("self.dec_embed_dim)") == 2, "the reference's decode changed: review this patch"
    namespace = {}
    exec(compile(patched, inspect.getsourcefile(top.Pi3X), "exec"), vars(top), namespace)
    top.Pi3X.decode = namespace["decode"]


def pi3x_goldens(out: Path) -> None:
    import pi3.models.pi3x as top

    released = key_manifest(top.Pi3X())
    model = top.Pi3X()
    pi3x_small(model)
    pi3x_small_width_decode(top)
    randomise(model)
    model.eval()
    generator = torch.Generator().manual_seed(SEED + 4)
    images = torch.rand(1, 3, 3, 42, 56, generator=generator)
    focal = torch.tensor([40.0, 50.0, 45.0])
    intrinsics = torch.zeros(1, 3, 3, 3)
    intrinsics[0, :, 0, 0], intrinsics[0, :, 1, 1] = focal, focal * 1.1
    intrinsics[0, :, 0, 2], intrinsics[0, :, 1, 2], intrinsics[0, :, 2, 2] = 28.0, 21.0, 1.0
    depth = torch.rand(1, 3, 42, 56, generator=generator) * 3 + 1
    depth[..., :10, :] = 0.0  # unknown there
    inputs = {"images": images, "intrinsics": intrinsics, "depth": depth}
    outputs = {}
    with torch.no_grad():
        for run, kwargs in (("plain", {}), ("intrinsics", {"intrinsics": intrinsics}), ("depth", {"depths": depth})):
            outputs |= {f"{run}.{k}": v for k, v in model(images, **kwargs).items()}
    # Pose conditioning (its own generator: the inputs above stay as they were): every frame posed with known
    # intrinsics (translations normalised by their mean length), and the first two of three posed with known
    # intrinsics and depth (translations normalised by the mean depth; the third frame's placeholder is unused).
    poses = random_poses(images.shape[1], torch.Generator().manual_seed(SEED + 5))
    pose_mask = torch.tensor([[True, True, False]])
    inputs |= {"poses": poses, "pose_mask": pose_mask}
    pose_runs = (
        ("poses", {"intrinsics": intrinsics, "poses": poses}),
        ("depth_poses", {"intrinsics": intrinsics, "depths": depth, "poses": poses, "mask_add_pose": pose_mask}),
    )
    with torch.no_grad():
        for run, kwargs in pose_runs:
            result = model(images, **kwargs)
            outputs |= {f"{run}.{k}": result[k] for k in PI3X_POSE_OUTPUTS}
    meta = {"reference": "yyfz/Pi3", "commit": git_commit(top), "tiny": PI3_TINY | PI3X_TINY}
    write_golden(out / "pi3x-tiny", model, inputs, outputs, released, meta)
    print("pi3x-tiny", {k: tuple(v.shape) for k, v in outputs.items() if k.startswith("plain")})


# ------------------------------------------------------------------------------------------ preprocessing

# Photo sizes (width, height) that exercise the aspect-ratio crop (tall, wide), padding and rounding.
PHOTO_SIZES = ((97, 61), (61, 97), (150, 40), (40, 150))
OMEGA_RESOLUTION, PI3_PIXEL_LIMIT = 64, 5000


def _torchvision_shim() -> None:
    """The loaders import torchvision only for `transforms.ToTensor`; this environment has no torchvision, so that
    one class is given its definition for PIL RGB images (uint8 [H, W, 3] / 255 -> float32 [3, H, W])."""
    import sys
    import types

    import numpy as np

    class ToTensor:
        def __call__(self, image):
            return torch.from_numpy(np.asarray(image, dtype=np.uint8).copy()).permute(2, 0, 1).float() / 255.0

    transforms = types.SimpleNamespace(ToTensor=ToTensor)
    sys.modules.setdefault("torchvision", types.SimpleNamespace(transforms=transforms))
    sys.modules.setdefault("torchvision.transforms", transforms)
    sys.modules.setdefault("plyfile", types.SimpleNamespace(PlyData=None, PlyElement=None))  # unused by the loader


def preprocessing_goldens(out: Path) -> None:
    """Photos of PHOTO_SIZES (seeded noise, one with alpha) through both references' loaders."""
    import numpy as np
    from PIL import Image

    _torchvision_shim()
    from pi3.utils.basic import load_images_as_tensor
    from vggt_omega.utils.load_fn import load_and_preprocess_images

    folder = out / "preprocessing"
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(SEED)
    paths = []
    for i, (width, height) in enumerate(PHOTO_SIZES):
        channels = 4 if i == 0 else 3
        pixels = rng.integers(0, 256, size=(height, width, channels), dtype=np.uint8)
        path = folder / f"photo_{i}.png"
        Image.fromarray(pixels, "RGBA" if channels == 4 else "RGB").save(path)
        paths.append(path)
    outputs = {"omega": load_and_preprocess_images([str(p) for p in paths], image_resolution=OMEGA_RESOLUTION)}
    outputs |= {"pi3": load_images_as_tensor(str(folder), PIXEL_LIMIT=PI3_PIXEL_LIMIT, verbose=False)}
    # Both loaders output PIL's 8-bit pixels / 255 (padding: 1.0), so 8 bits store them exactly.
    pixels = {k: (v * 255).round().to(torch.uint8).contiguous() for k, v in outputs.items()}
    assert all(torch.equal(pixels[k].float() / 255, v) for k, v in outputs.items())
    save_file(pixels, str(folder / "io.safetensors"))
    meta = {"omega_resolution": OMEGA_RESOLUTION, "pi3_pixel_limit": PI3_PIXEL_LIMIT, "sizes": PHOTO_SIZES}
    (folder / "meta.json").write_text(json.dumps(meta) + "\n")
    print("preprocessing", {k: tuple(v.shape) for k, v in outputs.items()})


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("out", nargs="?", type=Path, default=Path("tests/data/family_goldens"))
    parser.add_argument("--family", choices=("omega", "pi3", "preprocessing", "all"), default="all")
    parser.add_argument("--full", action="store_true", help="run the released sizes once and print summaries")
    args = parser.parse_args()
    torch.set_num_threads(2)
    if args.full:
        print(json.dumps(full_runs(args.out), indent=2))
        return
    if args.family in ("omega", "all"):
        omega_goldens(args.out)
    if args.family in ("pi3", "all"):
        pi3_goldens(args.out)
        pi3x_goldens(args.out)
    if args.family in ("preprocessing", "all"):
        preprocessing_goldens(args.out)


if __name__ == "__main__":
    main()
