#!/usr/bin/python3
"""hung_fs.py SOURCE MOUNT: a FUSE file system for the tests (tests/support/hung_fs.rs).

MOUNT shows the regular files of the directory SOURCE, read-only, as they are at each call
(no kernel caching of attributes, entries or pages), so that every open and read is a
request to this process. The tests stop it (SIGSTOP) to make the mount hang: a request it
does not read leaves the reader's system call waiting, killably, as on a network mount
whose server went away; SIGCONT answers them.
"""
import errno
import os
import stat
import sys

try:  # Debian's python3-fusepy names the module fusepy; PyPI's fusepy names it fuse.
    from fusepy import FUSE, FuseOSError, Operations
except ImportError:
    from fuse import FUSE, FuseOSError, Operations


class Mirror(Operations):
    def __init__(self, source):
        self.source = source

    def _real(self, path):
        return os.path.join(self.source, path.lstrip("/"))

    def getattr(self, path, fh=None):
        if path == "/":
            return {"st_mode": stat.S_IFDIR | 0o755, "st_nlink": 2}
        try:
            st = os.lstat(self._real(path))
        except FileNotFoundError:
            raise FuseOSError(errno.ENOENT)
        if not stat.S_ISREG(st.st_mode):
            raise FuseOSError(errno.ENOENT)
        return {
            "st_mode": stat.S_IFREG | 0o644,
            "st_nlink": 1,
            "st_size": st.st_size,
            "st_atime": st.st_atime,
            "st_mtime": st.st_mtime,
            "st_ctime": st.st_ctime,
        }

    def readdir(self, path, fh):
        return [".", ".."] + sorted(os.listdir(self.source))

    def open(self, path, flags):
        if flags & (os.O_WRONLY | os.O_RDWR):
            raise FuseOSError(errno.EROFS)
        return 0

    def read(self, path, size, offset, fh):
        with open(self._real(path), "rb") as f:
            f.seek(offset)
            return f.read(size)


def main():
    source, mount = sys.argv[1:3]
    FUSE(
        Mirror(source),
        mount,
        foreground=True,
        nothreads=False,
        ro=True,
        direct_io=True,
        attr_timeout=0,
        entry_timeout=0,
        negative_timeout=0,
    )


if __name__ == "__main__":
    main()
