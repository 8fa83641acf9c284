"""Configs: YAML presets (``defaults:`` chains) and ``key.sub=value`` overrides loaded into typed
dataclasses (:mod:`.load`), the ``--help`` text built from their field comments (:mod:`.help`), and
the sections every job shares: CLIP, run (:mod:`.sections`)."""
