"""The object stores moved to `tenantry.core.objectstore` (backups use them too)."""

from tenantry.core.objectstore import (
    DirectoryObjectStore,
    MemoryObjectStore,
    ObjectStore,
    S3ObjectStore,
    _check_key,
)

__all__ = ["ObjectStore", "DirectoryObjectStore", "MemoryObjectStore", "S3ObjectStore",
           "_check_key"]
