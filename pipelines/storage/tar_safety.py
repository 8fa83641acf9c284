"""Reading tars safely, for every tar walker (corpus shards and pair shards): members we refuse to
read (links and names that climb out of, or start above, the archive) and the end-of-archive check.

Readers never extract tars to disk, but a member named ``/etc/passwd.jpg`` or ``../x.jpg``, or a
symlink / hard link, has no business in a corpus or pair shard: such members are skipped and
counted under their reason (never followed, never resolved), so a hostile archive cannot point a
reader at anything outside itself.

Reasons: ``unsafe_link`` (symbolic or hard link), ``unsafe_path`` (absolute name, a ``..``
component, or a Windows drive / backslash path). :func:`safe_file_members` walks a tar's plain,
safe file members and counts the refused ones; :func:`ended_cleanly` tells a tar that ended on its
end-of-archive marker from one cut at a member boundary.
"""
from __future__ import annotations

import collections
import logging
import posixpath
import tarfile
from typing import Iterator, Optional

__all__ = ["unsafe_member_reason", "safe_file_members", "ended_cleanly"]

log = logging.getLogger(__name__)
BLOCK = 512  # tar block size: the end-of-archive marker is (at least) one zero block


def unsafe_member_reason(member: tarfile.TarInfo) -> Optional[str]:
    """The skip reason for a member we must not read, or None when it is a plain safe name."""
    if member.issym() or member.islnk():
        return "unsafe_link"
    name = member.name
    if name.startswith(("/", "\\")) or "\\" in name or (len(name) > 1 and name[1] == ":"):
        return "unsafe_path"
    if ".." in posixpath.normpath(name).split("/") or ".." in name.split("/"):
        return "unsafe_path"
    return None


def safe_file_members(tar: tarfile.TarFile, skips: collections.Counter, *, where: str) -> Iterator[tarfile.TarInfo]:
    """The plain file members of ``tar`` in order; refused ones are logged and counted in ``skips``
    under their :func:`unsafe_member_reason` (``where`` names the tar in the log)."""
    for member in tar:
        if unsafe := unsafe_member_reason(member):
            log.warning("%s: refused tar member %r (%s)", where, member.name, unsafe)
            skips[unsafe] += 1
            continue
        if member.isfile():
            yield member


def ended_cleanly(tar: tarfile.TarFile) -> bool:
    """True when iteration stopped on a zero block (the end-of-archive marker).

    ``tarfile`` ends iteration silently when the data stops at, or inside, a member header; in
    stream mode the stream position (decompressed bytes) then lies less than one block past the
    last member, while a proper end marker puts it exactly one block past.
    """
    pos = getattr(tar.fileobj, "pos", None)  # tarfile._Stream
    if not isinstance(pos, int):
        return True
    return pos - tar.offset >= BLOCK
