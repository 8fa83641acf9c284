"""The pair-shard format, with one owner: :mod:`.format` (names, the ``PairMeta`` record, the commit
rule, the reader, the parquet index), :mod:`.writer` (atomic shard writing), :mod:`.stream` (the
training stream that ``jobs/tune_mpt.py`` reads), :mod:`.select` (filtering a mined folder by an
expression over its indexes) and :mod:`.quality` (pairs against ground truth and against chance)."""
