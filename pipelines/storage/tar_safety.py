"""Tar members we refuse to read: links and names that climb out of (or start above) the archive.

Readers never extract tars to disk, but a member named ``/etc/passwd.jpg`` or ``../x.jpg``, or a
symlink / hard link, has no business in a corpus or pair shard: such members are skipped and
counted under their reason (never followed, never resolved), so a hostile archive cannot point a
reader at anything outside itself.

Reasons: ``unsafe_link`` (symbolic or hard link), ``unsafe_path`` (absolute name, a ``..``
component, or a Windows drive / backslash path).
"""
from __future__ import annotations

import posixpath
import tarfile
from typing import Optional

__all__ = ["unsafe_member_reason"]


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
