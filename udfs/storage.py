"""One filesystem layer for every file that is not a Delta table.

Cluster artifacts, export shards and manifests, vocabulary CSVs, the report and the
paper's published PCA/centroids are read and written here, by the driver and by
executors alike, so a later stage on another cluster finds them where an earlier one
left them. Delta tables go through Spark (jobs/lake.py); everything else goes through
fsspec, which reaches what Spark's Hadoop FileSystem reaches without a JVM on the
executor side (s3://, s3a://, gs://, abfs(s)://, hdfs:// with its optional packages).

Paths:
- a local or mounted folder (`/Volumes/<catalog>/<schema>/<volume>/...` on Databricks,
  `/dbfs/...`, NFS) is a plain path: os calls, atomic renames;
- `dbfs:/x` is the same file as `/dbfs/x` where the DBFS mount exists (a Databricks
  node), else fsspec's DBFS client;
- `file:///x` is `/x`;
- anything else with `scheme://` is an fsspec URL, written in one piece (an object
  store's put is atomic), read with `fs.open`.
"""

from __future__ import annotations

import os
import shutil
import tempfile
import uuid
from collections.abc import Iterable
from typing import Any

# Hadoop spellings that fsspec knows under another name.
_SCHEME_ALIASES = {"s3a": "s3", "s3n": "s3", "abfss": "abfs", "wasbs": "az", "gcs": "gs"}


class StorageError(OSError):
    """A location that cannot be used (a filesystem package missing, a bad URL)."""


def is_remote(path: str) -> bool:
    """True for fsspec URLs; False for local/mounted paths (and file://, dbfs: on a node)."""
    return "://" in local_path(path)


def local_path(path: str) -> str:
    """The path os calls take, or the URL unchanged when it is not a local file."""
    path = str(path)
    if path.startswith("file://"):
        return path[len("file://"):]
    if path.startswith("dbfs:") and os.path.isdir("/dbfs"):
        return "/dbfs/" + path[len("dbfs:"):].lstrip("/")
    if path.startswith("dbfs:/") and "://" not in path:
        return "dbfs://" + path[len("dbfs:"):].lstrip("/")
    return path


def is_absolute(path: str) -> bool:
    """A URL, a mount or an absolute path: never resolved against anything."""
    return "://" in path or path.startswith(("dbfs:", "/")) or os.path.isabs(path)


def join(root: str, *parts: str) -> str:
    return "/".join([str(root).rstrip("/"), *(p.strip("/") for p in parts if p)])


def resolve(base: str, path: str) -> str:
    """`path` if it is absolute (or a URL), else `path` under `base` (never the cwd)."""
    return path if not path or is_absolute(path) else join(base, path)


def filesystem(path: str) -> tuple[Any, str]:
    """(fsspec filesystem, path within it) for a URL; fsspec's local fs for local paths."""
    import fsspec

    target = local_path(path)
    scheme, sep, rest = target.partition("://")
    if sep and scheme in _SCHEME_ALIASES:
        target = f"{_SCHEME_ALIASES[scheme]}://{rest}"
    try:
        return fsspec.core.url_to_fs(target)
    except (ImportError, ValueError) as exc:
        raise StorageError(f"cannot open {path}: {exc}") from exc


def exists(path: str) -> bool:
    if not is_remote(path):
        return os.path.exists(local_path(path))
    fs, inner = filesystem(path)
    return bool(fs.exists(inner))


def isfile(path: str) -> bool:
    if not is_remote(path):
        return os.path.isfile(local_path(path))
    fs, inner = filesystem(path)
    return bool(fs.isfile(inner))


def read_bytes(path: str) -> bytes:
    """The whole file; FileNotFoundError when it is not there."""
    if not is_remote(path):
        with open(local_path(path), "rb") as f:
            return f.read()
    fs, inner = filesystem(path)
    with fs.open(inner, "rb") as f:
        return f.read()


def read_text(path: str) -> str:
    return read_bytes(path).decode("utf-8")


def open_read(path: str, mode: str = "rb"):
    """A readable file object (for streaming readers such as pandas or tarfile)."""
    if not is_remote(path):
        return open(local_path(path), mode)
    fs, inner = filesystem(path)
    return fs.open(inner, mode)


def temp_path(final: str) -> str:
    """A hidden temp name beside `final` (same filesystem: rename is atomic), or in /tmp."""
    name = f".{os.path.basename(final.rstrip('/'))}.tmp-{uuid.uuid4().hex}"
    if is_remote(final):
        return os.path.join(tempfile.gettempdir(), name)
    folder = os.path.dirname(local_path(final))
    os.makedirs(folder or ".", exist_ok=True)
    return os.path.join(folder, name)


def publish_file(tmp: str, final: str) -> None:
    """Move a finished local temp file to `final` in one step (rename or single upload)."""
    if is_remote(final):
        fs, inner = filesystem(final)
        try:
            parent = inner.rsplit("/", 1)[0]
            if parent and parent != inner:
                fs.makedirs(parent, exist_ok=True)
            fs.put_file(tmp, inner)
        finally:
            os.remove(tmp)
    else:
        os.replace(tmp, local_path(final))


def write_bytes(final: str, data: bytes) -> None:
    """Write `final` atomically: readers see the old file or the whole new one."""
    tmp = temp_path(final)
    try:
        with open(tmp, "wb") as f:
            f.write(data)
        publish_file(tmp, final)
    finally:
        if os.path.exists(tmp):
            os.remove(tmp)


def write_text(final: str, text: str) -> None:
    write_bytes(final, text.encode("utf-8"))


def makedirs(path: str) -> None:
    if not is_remote(path):
        os.makedirs(local_path(path), exist_ok=True)
        return
    fs, inner = filesystem(path)
    fs.makedirs(inner, exist_ok=True)


def listdir(path: str) -> list[str]:
    """Names (not paths) in a folder; [] when it does not exist."""
    if not is_remote(path):
        try:
            return sorted(os.listdir(local_path(path)))
        except FileNotFoundError:
            return []
    fs, inner = filesystem(path)
    if not fs.exists(inner):
        return []
    return sorted(p.rstrip("/").rsplit("/", 1)[-1] for p in fs.ls(inner, detail=False))


def remove(path: str) -> None:
    """Delete a file or a folder tree; nothing when it is not there."""
    if not is_remote(path):
        target = local_path(path)
        if os.path.isdir(target):
            shutil.rmtree(target)
        elif os.path.lexists(target):
            os.remove(target)
        return
    fs, inner = filesystem(path)
    if fs.exists(inner):
        fs.rm(inner, recursive=True)


def put_folder(local_dir: str, final: str, last: Iterable[str] = ()) -> None:
    """Copy a finished local folder to `final`, file by file (each atomic), `last` last.

    A reader who opens `final/<last>` (a report's index.html) finds everything it links
    to already in place.
    """
    late = set(last)
    files: list[str] = []
    for folder, _, names in os.walk(local_dir):
        for name in sorted(names):
            rel = os.path.relpath(os.path.join(folder, name), local_dir).replace(os.sep, "/")
            files.append(rel)
    files.sort(key=lambda rel: (rel in late, rel))
    for rel in files:
        src = os.path.join(local_dir, rel)
        dest = join(final, rel)
        tmp = temp_path(dest)
        shutil.copyfile(src, tmp)
        publish_file(tmp, dest)


def local_copy(path: str) -> str:
    """A local file holding `path`'s bytes, for libraries that open files by name
    (open_clip's checkpoint loader): the path itself when it is local or mounted, else a
    copy in this machine's temp folder, fetched once per version of the file (its size
    and modification stamp are looked up on every call) and written atomically, so a
    half-written copy is never found."""
    if not is_remote(path):
        return local_path(path)
    import hashlib

    folder = os.path.join(tempfile.gettempdir(), f"deparrot-files-{os.getuid()}")
    os.makedirs(folder, exist_ok=True)
    fs, inner = filesystem(path)
    info = fs.info(inner)  # a new version of the file under the same name is a new copy
    version = [str(info.get(k)) for k in ("size", "mtime", "LastModified", "ETag", "created")]
    key = hashlib.sha256("\0".join([path, *version]).encode()).hexdigest()[:16]
    copy = os.path.join(folder, f"{key}-{os.path.basename(path.rstrip('/'))}")
    if not os.path.isfile(copy):
        tmp = f"{copy}.tmp-{uuid.uuid4().hex}"
        with open(tmp, "wb") as f:
            f.write(read_bytes(path))
        os.replace(tmp, copy)
    return copy
