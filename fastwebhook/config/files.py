"""Files a config names (secrets, schemas): read for the operator's own config from anywhere,
for a workflow stored through the admin API only from the secrets folders."""

from __future__ import annotations

import os
from pathlib import Path


def read_secret_file(loader, name: str, where: str) -> str:
    """A relative name is looked up in systemd's $CREDENTIALS_DIRECTORY first (LoadCredential=),
    then in the config file's folder (not the working directory: a server and a `check` run
    from elsewhere read the same file)."""
    if loader.file_roots is not None:
        found = stored_file(loader, name, where)
        try:
            return found.read_text().strip() if found is not None else ""
        except OSError:
            loader.error(where, STORED_FILE_REFUSED)
            return ""
    candidates = [loader.path.parent / name]     # an absolute name stays as it is
    credentials = loader.environ.get("CREDENTIALS_DIRECTORY")
    if credentials and not os.path.isabs(name):
        candidates.insert(0, Path(credentials) / name)
    for candidate in candidates:
        if candidate.is_file():
            try:
                return candidate.read_text().strip()
            except OSError as exc:
                loader.error(where, f"cannot read {candidate}: {exc.strerror}")
                return ""
    looked = "" if os.path.isabs(name) else f" (looked for {' and '.join(map(str, candidates))})"
    loader.error(where, f"no such file: {name}{looked}")
    return ""


STORED_FILE_REFUSED = ("not a file this workflow may read: a stored workflow names files "
                       "under $CREDENTIALS_DIRECTORY or [admin] secrets_dir only")


def stored_file(loader, name: str, where: str) -> Path | None:
    """The file `name` of a stored workflow, if it lies in one of `loader.file_roots` once
    symlinks and `..` are resolved.  One refusal for "not there" and "not allowed", so the admin
    API cannot probe which paths exist."""
    for root in loader.file_roots:
        try:
            found = (root / name).resolve(strict=True)
        except (OSError, RuntimeError):   # missing, unreadable, a symlink loop
            continue
        if found.is_relative_to(root) and found.is_file():
            return found
    loader.error(where, STORED_FILE_REFUSED)
    return None
