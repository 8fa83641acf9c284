"""A procedural world with exact ground truth: drawn objects on textured stuff, with captions.

Modules: ``categories`` (vocabulary), ``shapes`` (geometry, rasterisation), ``textures``,
``compose`` (scenes + masks + labels), ``captions``, ``writers`` (COCO / WebDataset / semseg),
``generate`` (CLI: ``python -m pipelines.world.generate``).
"""
