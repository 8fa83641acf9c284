"""Where bytes live: fsspec URL handling (:mod:`.urls`), the one atomic write (:mod:`.atomic`), safe
tar reading for every tar walker (:mod:`.tar_safety`: refused members, end-of-archive check) and
secret redaction before anything is written (:mod:`.redact`). No wing-specific format here."""
