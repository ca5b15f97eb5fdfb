"""Blob storage adapters: a local directory (the embedded default) and an S3-compatible bucket."""

from adapters.blobs.local import LocalBlobStore
from adapters.blobs.s3 import S3BlobStore

__all__ = ["LocalBlobStore", "S3BlobStore"]
