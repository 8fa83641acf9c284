"""Where bytes live: fsspec URL handling (:mod:`.urls`), safe tar member rules (:mod:`.tar_safety`)
and secret redaction before anything is written (:mod:`.redact`). No wing-specific format here."""
