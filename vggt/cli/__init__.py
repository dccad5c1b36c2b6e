"""The `vggt` command line."""
