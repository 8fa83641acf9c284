"""Mining: one unit of the corpus in, one committed pair shard out.

:mod:`.config` (the ``jobs/mine.py`` config), :mod:`.cpu_stage` (decode, nouns, proposals and the
proposal builder), :mod:`.model_stage` (crops, CLIP, matching, writing), :mod:`.kept_images` (a URL-list run's downloaded images as
img2dataset tars, ``output.keep_images``), :mod:`.driver` (Ray actors,
dispatch, resume), :mod:`.stats` / :mod:`.stage_times` / :mod:`.throughput` (counts and timings),
:mod:`.paths` (making relative paths absolute), :mod:`.provenance` (hashes and the noun's place in its caption), :mod:`.report` and :mod:`.summary` (what a run says
when it ends), :mod:`.native_heap` (the workers' malloc setting)."""
