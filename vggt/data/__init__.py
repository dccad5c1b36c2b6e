"""Datasets for training and evaluation: the scene folder format, a COLMAP importer, synthetic scenes, augmentation."""

from vggt.data.scene import Frame, Scene, SceneFormatError, list_scenes, load_scene, write_scene

__all__ = ["Frame", "Scene", "SceneFormatError", "list_scenes", "load_scene", "write_scene"]
