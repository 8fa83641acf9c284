"""The pair-shard format, with one owner: :mod:`.format` (names, the ``PairMeta`` record, the commit
rule, the reader), :mod:`.writer` (atomic shard writing) and :mod:`.stream` (the training stream
that ``jobs/tune_mpt.py`` reads)."""
