"""A database URL's password kept out of sight, and where the URL comes from.

The URL is `--storage` if given, else the environment variable `KERAS_STABILITY_STORAGE`, else the
experiment file's `search.storage` (which may not hold a password). A PostgreSQL URL without a password
lets libpq's own sources supply it: `PGPASSWORD`, or a line in `~/.pgpass` (psycopg reads both).
"""

import os
import urllib.parse

STORAGE_VARIABLE = "KERAS_STABILITY_STORAGE"


def mask_password(url: str) -> str:
    """`url` with its password, if any, shown as `***` (for messages and logs)."""
    parts = urllib.parse.urlsplit(url)
    if parts.password is None:
        return url
    host = parts.netloc.rpartition("@")[2]
    return urllib.parse.urlunsplit(parts._replace(netloc=f"{parts.username or ''}:***@{host}"))


def hide_password(text: str, url: str | None) -> str:
    """`text` (an error message, say) with `url`'s password replaced by `***` wherever it appears."""
    password = urllib.parse.urlsplit(url).password if url else None
    if not password:
        return text
    for form in {password, urllib.parse.quote(password, safe=""), urllib.parse.unquote(password)}:
        text = text.replace(form, "***")
    return text


def storage_url(given: str | None, from_file: str | None = None, environment: dict | None = None) -> str | None:
    """The storage URL to use: `given` (the command line), else $KERAS_STABILITY_STORAGE, else `from_file`."""
    environment = os.environ if environment is None else environment
    return given or environment.get(STORAGE_VARIABLE) or from_file or None
