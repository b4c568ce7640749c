"""Rendering: cameras, the mesh rasteriser, SH lighting and 2D Gaussian splatting. Knows nothing of training."""

from headrecon.render.camera import Cameras, intrinsics_from_fov, look_at_world_to_cam
from headrecon.render.mesh_raster import (
    MeshFragments,
    MeshRender,
    face_normals,
    interpolate_face_corner_attributes,
    interpolate_vertex_attributes,
    rasterize_mesh,
    rasterize_triangles_2d,
    render_mesh,
    sample_texture,
    vertex_normals,
)
from headrecon.render.sh import default_sh_coeffs, sh_basis_order2, sh_directional_light, sh_irradiance
from headrecon.render.splat import render_surfels, resolve_backend
from headrecon.render.surfels import SurfelRender, Surfels

__all__ = [
    "Cameras",
    "MeshFragments",
    "MeshRender",
    "SurfelRender",
    "Surfels",
    "default_sh_coeffs",
    "face_normals",
    "interpolate_face_corner_attributes",
    "interpolate_vertex_attributes",
    "intrinsics_from_fov",
    "look_at_world_to_cam",
    "rasterize_mesh",
    "rasterize_triangles_2d",
    "render_mesh",
    "render_surfels",
    "resolve_backend",
    "sample_texture",
    "sh_basis_order2",
    "sh_directional_light",
    "sh_irradiance",
    "vertex_normals",
]
