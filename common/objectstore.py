"""A folder of objects in an S3-compatible store (``s3://bucket/prefix``), through
``pyarrow.fs.S3FileSystem``: put, get, list, delete a subtree.

It takes the same options as an ``s3://`` lake (``CommonSettings.s3_options``: delta-rs's
``AWS_ENDPOINT_URL``, ``AWS_REGION``, ``AWS_ACCESS_KEY_ID``, ``AWS_SECRET_ACCESS_KEY``,
``AWS_ALLOW_HTTP``), so one set of settings points both at the store. Without keys, the
AWS SDK's own chain applies (environment, profile, instance or pod role).

Errors: a malformed URL or endpoint is a ``ConfigError`` naming the setting; a store that
cannot be reached, refuses the credentials or has no such bucket is a
``DependencyUnavailable`` (or ``ConfigError`` for the missing bucket) naming the setting,
in one line.
"""

from __future__ import annotations

import re
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from typing import TYPE_CHECKING
from urllib.parse import urlparse

from common.errors import ConfigError, DependencyUnavailable

if TYPE_CHECKING:
    import pyarrow.fs as pafs

# S3's bucket naming rules (3-63 of lowercase letters, digits, dots and hyphens; a letter
# or digit at both ends), which every S3-compatible store accepts
_BUCKET = re.compile(r"^[a-z0-9][a-z0-9.-]{1,61}[a-z0-9]$")
ENDPOINT_SETTING = "INFERSTREAM_S3_ENDPOINT"


def split_s3_url(url: str, setting: str) -> tuple[str, str]:
    """``(bucket, prefix)`` of ``s3://bucket[/prefix]`` (the prefix without slashes at
    either end), or a ConfigError naming ``setting``."""
    parsed = urlparse(url)
    example = "(e.g. s3://inferstream-reports/drift)"
    if parsed.scheme != "s3":
        raise ConfigError(f"{setting}={url!r}: not an s3:// URL {example}")
    if not _BUCKET.match(parsed.netloc):
        raise ConfigError(f"{setting}={url!r}: {parsed.netloc!r} is not a bucket name {example}")
    if parsed.params or parsed.query or parsed.fragment:
        raise ConfigError(f"{setting}={url!r}: no query or fragment allowed {example}")
    prefix = parsed.path.strip("/")
    if prefix and any(part in ("", ".", "..") for part in prefix.split("/")):
        raise ConfigError(f"{setting}={url!r}: empty, '.' or '..' path segment {example}")
    return parsed.netloc, prefix


def check_endpoint(options: Mapping[str, str]) -> tuple[str | None, str]:
    """pyarrow's ``endpoint_override`` (host[:port]) and scheme from ``AWS_ENDPOINT_URL``
    (``None, "https"`` without one: AWS S3), or a ConfigError naming the setting."""
    url = options.get("AWS_ENDPOINT_URL")
    if not url:
        return None, "https"
    parsed = urlparse(url)
    if parsed.scheme not in ("http", "https") or not parsed.netloc or parsed.path.strip("/"):
        raise ConfigError(
            f"{ENDPOINT_SETTING}={url!r}: not an http(s)://host[:port] URL (e.g. http://seaweedfs:8333)"
        )
    return parsed.netloc, parsed.scheme


def s3_filesystem(options: Mapping[str, str]) -> pafs.S3FileSystem:
    """A pyarrow S3 filesystem from delta-rs style options (see the module docstring)."""
    import pyarrow.fs as pafs

    endpoint, scheme = check_endpoint(options)
    return pafs.S3FileSystem(
        access_key=options.get("AWS_ACCESS_KEY_ID"),
        secret_key=options.get("AWS_SECRET_ACCESS_KEY"),
        region=options.get("AWS_REGION"),
        endpoint_override=endpoint,
        scheme=scheme,
        connect_timeout=5,
        request_timeout=60,
        retry_strategy=pafs.AwsStandardS3RetryStrategy(max_attempts=3),
    )


class S3Folder:
    """The objects under ``s3://bucket/prefix``, addressed by their path below it
    (``rel``, ``/``-separated). Every failure of the store is one ``DependencyUnavailable``
    line naming ``setting``."""

    def __init__(self, url: str, options: Mapping[str, str], setting: str) -> None:
        self.url = url.rstrip("/")
        self.setting = setting
        self.bucket, self.prefix = split_s3_url(url, setting)
        self.endpoint = options.get("AWS_ENDPOINT_URL") or "AWS S3"
        self._fs = s3_filesystem(options)

    def _path(self, rel: str = "") -> str:
        return "/".join(p for p in (self.bucket, self.prefix, rel.strip("/")) if p)

    def url_of(self, rel: str) -> str:
        return f"{self.url}/{rel}"

    @contextmanager
    def _calling(self, what: str) -> Iterator[None]:
        try:
            yield
        except OSError as exc:
            detail = " ".join(str(exc).split())[:300]  # one line; the SDK's text can wrap
            raise DependencyUnavailable(
                f"{self.setting}={self.url}: {what} failed at {self.endpoint}: {detail} "
                f"(check {ENDPOINT_SETTING} and INFERSTREAM_S3_ACCESS_KEY_ID/_SECRET_ACCESS_KEY)"
            ) from exc

    def check(self) -> None:
        """The bucket exists and the credentials may list the folder (a ConfigError for
        a missing bucket, DependencyUnavailable for anything else)."""
        import pyarrow.fs as pafs

        with self._calling("listing the folder"):
            if self._fs.get_file_info(self.bucket).type == pafs.FileType.NotFound:
                raise ConfigError(
                    f"{self.setting}={self.url}: bucket {self.bucket!r} does not exist at {self.endpoint}; "
                    "create it or change the setting"
                )
            self._fs.get_file_info(pafs.FileSelector(self._path(), allow_not_found=True))

    def put(self, rel: str, data: bytes, content_type: str, cache_control: str | None = None) -> None:
        """One object, whole (a PUT is atomic: readers see the old or the new bytes)."""
        meta = {"Content-Type": content_type}
        if cache_control:
            meta["Cache-Control"] = cache_control
        with (
            self._calling(f"writing {rel}"),
            self._fs.open_output_stream(self._path(rel), metadata=meta) as out,
        ):
            out.write(data)

    def get(self, rel: str) -> bytes:
        with self._calling(f"reading {rel}"), self._fs.open_input_stream(self._path(rel)) as src:
            data: bytes = src.read()
        return data

    def files(self) -> dict[str, int]:
        """Every object below the folder: ``{rel: size}``."""
        import pyarrow.fs as pafs

        root = self._path()
        selector = pafs.FileSelector(root, recursive=True, allow_not_found=True)
        with self._calling("listing the folder"):
            infos = self._fs.get_file_info(selector)
        return {
            i.path.removeprefix(root).lstrip("/"): int(i.size) for i in infos if i.type == pafs.FileType.File
        }

    def delete_tree(self, rel: str) -> None:
        """Every object below ``rel`` (nothing there: nothing to do)."""
        import pyarrow.fs as pafs

        path = self._path(rel)
        with self._calling(f"deleting {rel}"):
            if self._fs.get_file_info(path).type != pafs.FileType.NotFound:
                self._fs.delete_dir(path)
