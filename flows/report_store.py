"""Where the drift reports are kept: a local folder, or a folder in object storage, with
the same layout either way (``flows.report``)::

    <model>/<run time>/report.html, report.json, summary.json
    index.html, dashboard.html

``INFERSTREAM_REPORTS_URL`` unset, ``file:///dir`` or a plain path: the folder is the
store (``INFERSTREAM_REPORTS_DIR``, default ``<data dir>/reports``). Runs are written
there, the index is rebuilt from the summaries there, retention deletes run folders
there. This is how reports have always been kept.

``s3://bucket/prefix`` (the object store of ``INFERSTREAM_S3_*``, as an ``s3://`` lake):
a run is written to the local working folder (``REPORTS_DIR``) as above, then published:
``report.html``, ``report.json``, then ``summary.json`` (last, so a run the index lists
always has its report), and its local folder is removed. The index is rebuilt from the
store's summaries, cached under ``<working folder>/.store-summaries`` (each refresh
fetches the new ones and drops the ones gone from the store) and uploaded as
``index.html``; its links are relative, so any server of the bucket serves it whole.
Retention lists the store's run folders and deletes their objects. Each object is one
PUT (readers see whole files); HTML carries ``Content-Type: text/html``, and the index
and the dashboard ``Cache-Control: no-cache``, for a bucket served as a web site.

Two runs refreshing at once each upload a whole index; the later one may miss the other
run, which the next refresh lists.
"""

from __future__ import annotations

import os
import shutil
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import unquote, urlparse

from common.errors import ConfigError
from common.objectstore import S3Folder, check_endpoint, split_s3_url
from flows import index
from flows.summary import SUMMARY_FILE

SETTING = "INFERSTREAM_REPORTS_URL"
CACHE_DIR = ".store-summaries"
RUN_FILES = ("report.html", "report.json", SUMMARY_FILE)  # upload order: the summary last
_TYPES = {".html": "text/html; charset=utf-8", ".json": "application/json"}


def content_type(name: str) -> str:
    return _TYPES.get(Path(name).suffix, "application/octet-stream")


@dataclass(frozen=True)
class ReportStore:
    """``local``: the folder reports are written to (the store itself without ``url``);
    ``url``: ``s3://bucket/prefix`` they are published to; ``options``: the object
    store's (``CommonSettings.s3_options``)."""

    local: Path
    url: str | None = None
    options: Mapping[str, str] = field(default_factory=dict, repr=False)

    def __post_init__(self) -> None:
        if self.url is not None:  # fail on a malformed URL or endpoint now, not at upload
            split_s3_url(self.url, SETTING)
            check_endpoint(self.options)

    @property
    def remote(self) -> bool:
        return self.url is not None

    def _folder(self) -> S3Folder:
        assert self.url is not None, "only a store in object storage has a folder"
        return S3Folder(self.url, self.options, SETTING)

    @property
    def index_root(self) -> Path:
        """The folder the index is rendered from: the store, or the summaries' cache."""
        return self.local / CACHE_DIR if self.remote else self.local

    def location(self, rel: str) -> str:
        """Where ``rel`` (``/``-separated, below the store) is kept: a path or a URL."""
        return f"{self.url.rstrip('/')}/{rel}" if self.url else str(self.local / rel)

    def check(self) -> None:
        """The object store answers and has the bucket (nothing to check locally)."""
        if self.remote:
            self._folder().check()

    def publish_run(self, run_dir: Path) -> str:
        """A run just written under ``local``: uploaded, then its local folder removed
        (its summary kept in the index's cache). Returns the run's location."""
        rel = run_dir.relative_to(self.local).as_posix()
        if self.remote:
            folder = self._folder()
            for name in RUN_FILES:
                if (run_dir / name).exists():
                    folder.put(f"{rel}/{name}", (run_dir / name).read_bytes(), content_type(name))
            if (run_dir / SUMMARY_FILE).exists():
                _write(self.index_root / rel / SUMMARY_FILE, (run_dir / SUMMARY_FILE).read_bytes())
            shutil.rmtree(run_dir)
        return self.location(rel)

    def publish_file(self, path: Path) -> str:
        """A page rewritten on every run (``dashboard.html``) under ``local``."""
        rel = path.relative_to(self.local).as_posix()
        if self.remote:
            self._folder().put(rel, path.read_bytes(), content_type(rel), cache_control="no-cache")
        return self.location(rel)

    def refresh_index(self) -> str:
        """Rebuild ``index.html`` from every run's summary in the store; its location."""
        if not self.remote:
            return str(index.refresh(self.local))
        folder = self._folder()
        self._sync_summaries(folder)
        page = index.refresh(self.index_root)
        folder.put(index.INDEX, page.read_bytes(), content_type(index.INDEX), cache_control="no-cache")
        return self.location(index.INDEX)

    def _sync_summaries(self, folder: S3Folder) -> None:
        cache = self.index_root
        remote = {rel: size for rel, size in folder.files().items() if _is_summary(rel)}
        cached = {p.relative_to(cache).as_posix(): p for p in cache.glob(f"*/*/{SUMMARY_FILE}")}
        for rel, size in remote.items():
            have = cached.get(rel)
            if have is None or have.stat().st_size != size:
                _write(cache / rel, folder.get(rel))
        for rel in cached.keys() - remote.keys():  # removed from the store (retention)
            shutil.rmtree(cached[rel].parent, ignore_errors=True)

    def run_names(self) -> list[str]:
        """Every folder two levels down (``<model>/<run>``; maybe not a run's), sorted."""
        if self.remote:
            return sorted({"/".join(r.split("/")[:2]) for r in self._folder().files() if r.count("/") >= 2})
        return sorted(p.relative_to(self.local).as_posix() for p in self.local.glob("*/*") if p.is_dir())

    def remove_runs(self, rels: list[str]) -> list[str]:
        """Delete run folders (``<model>/<run>``) from the store; their locations."""
        folder = self._folder() if self.remote else None
        for rel in rels:
            if folder is not None:
                folder.delete_tree(rel)
            elif (self.local / rel).exists():  # a retry finds it gone
                shutil.rmtree(self.local / rel)
        return [self.location(rel) for rel in rels]


def _is_summary(rel: str) -> bool:
    parts = rel.split("/")
    return len(parts) == 3 and parts[2] == SUMMARY_FILE


def _write(path: Path, data: bytes) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    tmp.write_bytes(data)
    os.replace(tmp, path)


def open_store(
    url: str | None, reports_dir: Path | None, default_dir: Path, options: Mapping[str, str]
) -> ReportStore:
    """The store ``INFERSTREAM_REPORTS_URL`` names (see the module docstring), with
    ``reports_dir`` (``INFERSTREAM_REPORTS_DIR``, else ``default_dir``) as its local
    folder. A malformed URL is a ConfigError naming the setting; nothing is contacted."""
    local = reports_dir or default_dir
    if not url:
        return ReportStore(local)
    parsed = urlparse(url)
    if parsed.scheme == "s3":
        split_s3_url(url, SETTING)  # the error quotes the URL as given
        return ReportStore(local, url.rstrip("/"), dict(options))
    if parsed.scheme not in ("", "file"):
        raise ConfigError(f"{SETTING}={url!r}: use file:///dir, a directory path or s3://bucket/prefix")
    if parsed.scheme == "file" and parsed.netloc not in ("", "localhost"):
        raise ConfigError(f"{SETTING}={url!r}: a file:// URL names a local directory (file:///dir)")
    path_text = unquote(parsed.path) if parsed.scheme else url
    if not path_text.strip():
        raise ConfigError(f"{SETTING}={url!r}: no directory in the URL (file:///dir)")
    path = Path(path_text)
    if reports_dir is not None and reports_dir.resolve() != path.resolve():
        raise ConfigError(
            f"{SETTING}={url!r} and INFERSTREAM_REPORTS_DIR={str(reports_dir)!r} name different "
            "folders: set one (REPORTS_DIR is the working folder of an s3:// REPORTS_URL)"
        )
    return ReportStore(path)
