"""Orchestration and I/O around the :mod:`ovseg` model library, in wings that follow the data flow.

``corpus`` (readers, decoding) → ``mine`` (CPU stage, model stage, Ray driver, stats, report) →
``pairs`` (the pair-shard format: writer, reader, training stream) → ``train`` (the DDP trainers).
``config`` loads the YAML presets into typed dataclasses; ``storage`` holds the fsspec, tar and
secret-redaction rules every wing shares; ``records`` the record types the wings pass along.
``world`` is the procedural benchmark generator: only ``bench/`` and tests import it.
"""
