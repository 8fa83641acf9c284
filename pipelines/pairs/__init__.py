"""The pair-shard format, with one owner: :mod:`.format` (names, the ``PairMeta`` record, the commit
rule, the reader), :mod:`.writer` (atomic shard writing), :mod:`.stream` (the training stream that
``jobs/tune_mpt.py`` reads) and :mod:`.quality` (pairs against COCO ground truth: the annotation
file's vocabulary and kinds, spaCy lemmas, synonyms; ``coco_synonyms.json`` for COCO's 80 + 91)."""
