"""Corpus readers (COCO Captions, WebDataset, parquet, URL lists) that plan deterministic units of
work and yield :class:`~pipelines.records.ImageRecord`\\ s, image downloading for URL lists
(:mod:`.fetch`) and image decoding (:mod:`.decode`)."""
