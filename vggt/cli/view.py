"""`vggt view SCENE_DIR`: a saved reconstruction in a browser 3D view (viser).

    vggt view scene/                 # the output folder of `vggt reconstruct` (or the demo's unzipped download)
    vggt view scene/ --port 8081

Shows the point cloud (confidence-percentile slider, point size, the frame its points come from) and one camera
frustum per photo, textured with the photo (click one to look through it). It reads only the saved files:
predictions.npz, cameras.json and images/; no model runs. Needs the `demo` extra.
"""

from __future__ import annotations

import argparse
from pathlib import Path

from vggt.cli.args import add_message_arguments, add_subcommand
from vggt.cli.demo import add_server_arguments

DEFAULT_VIEW_PORT = 8080


def add_parser(subparsers: argparse._SubParsersAction) -> argparse.ArgumentParser:
    parser = add_subcommand(
        subparsers,
        "view",
        run,
        help="a saved reconstruction in a browser 3D view (points, cameras)",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument(
        "directory", type=Path, metavar="SCENE_DIR", help="an output folder of vggt reconstruct (or of the demo)"
    )
    add_server_arguments(parser, DEFAULT_VIEW_PORT)
    add_message_arguments(parser)
    return parser


def run(args: argparse.Namespace) -> int:
    from vggt.apps.checks import check_listen_address, require_modules

    require_modules("vggt view", "viser")
    port = check_listen_address(args.host, args.port)
    from vggt.apps.viewer import serve_viewer
    from vggt.pipeline.reconstruction import Reconstruction

    serve_viewer(Reconstruction.load(args.directory), args.host, port)
    return 0
