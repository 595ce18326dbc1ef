"""Destinations a manifest claims: no file twice, and no file where another needs a directory."""

from __future__ import annotations


class Claims:
    """Each claimed file → the entry that claimed it, each directory above one → the first file below it.

    So every check is a few dictionary look-ups, not a scan of all names.
    """

    def __init__(self) -> None:
        self._files: dict[str, int] = {}
        self._dirs: dict[str, str] = {}

    def clash(self, name: str, index: int) -> tuple[str, int] | None:
        """The file and entry ``name`` clashes with; None when it does not, and then it is claimed for ``index``."""
        parents = []
        if name.rpartition("/")[0] not in self._dirs:  # a known directory: so are all above it, and none is a file
            slash = name.find("/")
            while slash != -1:
                parents.append(name[:slash])
                slash = name.find("/", slash + 1)
        for other in (name, *parents):
            if other in self._files and other not in self._dirs:
                return other, self._files[other]
        if name in self._dirs:
            return self._dirs[name], self._files[self._dirs[name]]
        self._files[name] = index
        for parent in parents:
            self._dirs.setdefault(parent, name)
        return None
