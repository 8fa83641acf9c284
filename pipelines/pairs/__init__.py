"""The pair-shard format, with one owner: :mod:`.format` (names, the ``PairMeta`` record, the commit
rule, the reader, the parquet index), :mod:`.writer` (atomic shard writing), :mod:`.stream` (the
training stream that ``jobs/tune_mpt.py`` reads), :mod:`.select` (filtering a mined folder by an
expression over its indexes) and :mod:`.quality` (pairs against COCO ground truth: the annotation
file's vocabulary and kinds, spaCy lemmas, synonyms; ``coco_synonyms.json`` for COCO's 80 + 91; and
against chance: a random choice among the same candidate masks)."""
