"""Corpus readers (COCO Captions, WebDataset, parquet) that plan deterministic units of work and
yield :class:`~pipelines.records.ImageRecord`\\ s, and image decoding (:mod:`.decode`)."""
