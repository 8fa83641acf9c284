"""Segmenting and evaluating images with an open vocabulary: the jobs' orchestration (inputs via fsspec,
models from the config, outputs written); the inference itself is :mod:`ovseg.segment`."""
