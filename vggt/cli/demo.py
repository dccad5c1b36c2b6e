"""`vggt demo`: the reconstruction web page (Gradio), served from this machine.

    vggt demo                                     # http://127.0.0.1:7860 with facebook/VGGT-1B
    vggt demo --examples scenes/ --port 8000      # example scenes: each subfolder of scenes/ is one
    vggt demo --preset tiny --resolution 224      # random weights, to try the page out quickly

Upload photos or a video, press Reconstruct, and look at the cameras and the point cloud in 3D; the view
controls re-draw it from the cached predictions without running the model again. The model loads once and
runs one reconstruction at a time; visitors wait in a queue and see their position. It listens on 127.0.0.1
(this machine only) unless --host says otherwise; --share asks Gradio for a public link. Each visitor's files
are deleted when they close the page or after --session-minutes idle. Needs the `demo` extra.
"""

from __future__ import annotations

import argparse
import os
import tempfile
from pathlib import Path

from vggt.cli.args import (
    add_image_arguments,
    add_message_arguments,
    add_model_arguments,
    add_subcommand,
    positive_float,
    positive_int,
)
from vggt.errors import InputError

DEFAULT_HOST = "127.0.0.1"
DEFAULT_PORT = 7860
DEFAULT_MAX_FRAMES = 100
DEFAULT_PAGE_FRAMES = 32
DEFAULT_MAX_FILES = 200
DEFAULT_MAX_FILE_MB = 500
DEFAULT_SESSION_MINUTES = 60.0
DEFAULT_MAX_UPLOAD_MB = 1024
DEFAULT_MAX_SERVER_UPLOADS_MB = 8192
SECONDS_PER_MINUTE = 60.0


def add_server_arguments(parser: argparse.ArgumentParser, default_port: int) -> argparse._ArgumentGroup:
    """--host, --port (shared by `vggt demo` and `vggt view`)."""
    group = parser.add_argument_group("server")
    group.add_argument(
        "--host", default=DEFAULT_HOST, help=f"address to listen on (default {DEFAULT_HOST}: this machine only)"
    )
    group.add_argument("--port", type=int, default=default_port, help=f"port (default {default_port}; 0: any free)")
    return group


def add_parser(subparsers: argparse._SubParsersAction) -> argparse.ArgumentParser:
    parser = add_subcommand(
        subparsers,
        "demo",
        run,
        help="a web page that reconstructs uploaded photos or a video and shows them in 3D",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    add_model_arguments(parser)
    add_image_arguments(parser, f"the most frames one reconstruction may use (default {DEFAULT_MAX_FRAMES})")
    server = add_server_arguments(parser, DEFAULT_PORT)
    server.add_argument("--share", action="store_true", help="also serve on a public gradio.live link (off)")
    server.add_argument("--examples", type=Path, default=None, metavar="DIR", help="example scenes: one per subfolder")
    server.add_argument(
        "--max-files",
        type=positive_int,
        default=DEFAULT_MAX_FILES,
        help=f"files per upload (default {DEFAULT_MAX_FILES})",
    )
    server.add_argument(
        "--max-file-size",
        type=positive_int,
        default=DEFAULT_MAX_FILE_MB,
        metavar="MB",
        help=f"largest uploaded file (default {DEFAULT_MAX_FILE_MB} MB)",
    )
    server.add_argument(
        "--max-upload",
        type=positive_int,
        default=DEFAULT_MAX_UPLOAD_MB,
        metavar="MB",
        help=f"most bytes one upload request or one reconstruction may bring (default {DEFAULT_MAX_UPLOAD_MB} MB)",
    )
    server.add_argument(
        "--max-server-uploads",
        type=positive_int,
        default=DEFAULT_MAX_SERVER_UPLOADS_MB,
        metavar="MB",
        help=f"most bytes of visitors' files the server keeps at once (default {DEFAULT_MAX_SERVER_UPLOADS_MB} MB)",
    )
    server.add_argument(
        "--session-minutes",
        type=positive_float,
        default=DEFAULT_SESSION_MINUTES,
        help=f"delete a visitor's files after this long idle (default {DEFAULT_SESSION_MINUTES:g})",
    )
    add_message_arguments(parser)
    return parser


def run(args: argparse.Namespace) -> int:
    from vggt.apps.checks import check_listen_address, example_scenes, require_modules
    from vggt.cli.reconstruct import check_export_dependencies

    # Everything that needs no model first: a wrong port should not wait for a 5 GB checkpoint.
    require_modules("vggt demo", "gradio")
    check_export_dependencies()
    port = check_listen_address(args.host, args.port)
    examples = example_scenes(args.examples.resolve()) if args.examples is not None else {}
    max_frames = args.max_frames or DEFAULT_MAX_FRAMES
    if max_frames < 1:
        raise InputError("{max_frames} must be at least 1, got {value}", value=max_frames)

    from vggt.pipeline.model_choice import expected_config

    check_resolution(args.resolution, expected_config(args.model_name, args.preset).patch_size)

    from vggt.apps.gradio_files import (
        CACHE_PREFIX,
        STORE_PREFIX,
        GradioFiles,
        gradio_temp_parent,
        remove_dead_servers_folders,
        server_folder,
    )
    from vggt.apps.runner import ModelRunner
    from vggt.apps.sessions import SessionStore

    runner = ModelRunner.load(
        args.checkpoint,
        args.preset,
        args.device,
        args.dtype,
        model_name=args.model_name,
        mode=args.mode,
        resolution=args.resolution,
    )
    from vggt.apps.demo import DemoApp, DemoSettings, serve

    settings = DemoSettings(
        max_files=args.max_files,
        max_frames=max_frames,
        default_frames=min(DEFAULT_PAGE_FRAMES, max_frames),
        session_seconds=args.session_minutes * SECONDS_PER_MINUTE,
        examples=examples,
        max_upload_bytes=args.max_upload << 20,
        max_server_bytes=args.max_server_uploads << 20,
    )
    # Sessions and Gradio's copies in folders of this server; those of servers that died go first.
    remove_dead_servers_folders([tempfile.gettempdir(), gradio_temp_parent()])
    store = SessionStore(server_folder(STORE_PREFIX), settings.session_seconds)
    cache = server_folder(CACHE_PREFIX, parent=_made(gradio_temp_parent()))
    os.environ["GRADIO_TEMP_DIR"] = str(cache)  # read by Gradio when the page is built and on every upload
    app = DemoApp(runner, store, settings, GradioFiles(cache))
    allowed = [path for paths in examples.values() for path in paths]  # the example photos, not their folder
    serve(app, args.host, port, args.share, args.max_file_size, allowed)
    return 0


def _made(folder: Path) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    return folder


def check_resolution(resolution: int | None, patch_size: int) -> None:
    """The model input size must be a positive multiple of the patch size (said before serving, not per run)."""
    if resolution is not None and (resolution < patch_size or resolution % patch_size):
        raise InputError(
            "{resolution} must be a positive multiple of the patch size {patch}, got {value}",
            patch=patch_size,
            value=resolution,
        )
