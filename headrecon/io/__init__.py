"""File output: atomic writes, meshes (OBJ/PLY), images."""

from headrecon.io.atomic import atomic_path, atomic_write_bytes, save_image, save_npz

__all__ = ["atomic_path", "atomic_write_bytes", "save_image", "save_npz"]
