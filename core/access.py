"""Who may use a shared app, and which folders the paths typed in it may reach.

By default the app binds 127.0.0.1 (``.streamlit/config.toml``): only this machine reaches it, and
a path typed in a page may be any path the user could open anyway. When the app is *shared* — it
binds another address, or ``require_login`` is on — two settings matter:

* ``require_login``: every visitor logs in with ``st.login`` (OpenID Connect; the provider is set in
  ``.streamlit/secrets.toml`` ``[auth]``), and only the emails in ``allowed_reviewers`` get in; the
  Review page records decisions under the login's email instead of a typed name.
* ``allowed_roots``: a path typed in the app (a model folder, an import file, an export, the
  workspace) must resolve — ``..`` collapsed and symlinks followed — inside one of these folders.
  Shared without any roots set, the only root is the workspace the app was started on.
* ``allowed_hosts``: a server URL typed on the Sample or Judge page makes this server send requests
  there; shared, its host must be on this list. Link-local and cloud metadata addresses are refused
  always, shared or not, by the openai backend itself (:func:`refuse_internal`).

The settings live in an ``[access]`` table of ``loopbreak.toml`` in that workspace (or in the file
named by ``$LOOPBREAK_CONFIG``); they are read at the server's start, never from a workspace typed
in the sidebar. Nothing here imports streamlit: the pages call these functions and draw the result.
"""

from __future__ import annotations

import dataclasses
import fnmatch
import ipaddress
import os
import socket
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import urlsplit

from core.config import option
from core.store import WorkspaceError

CONFIG_FILE = "loopbreak.toml"
CONFIG_ENV = "LOOPBREAK_CONFIG"
LOOPBACK = {"127.0.0.1", "localhost", "::1"}


class AccessDenied(WorkspaceError):
    """A path outside the allowed roots, or a visitor who is not on the list."""


@dataclass
class AccessConfig:
    """The ``[access]`` table of loopbreak.toml: login and path limits for a shared app."""

    require_login: bool = option(False, "every visitor logs in with st.login (OIDC, [auth] in .streamlit/secrets.toml)")
    allowed_reviewers: list[str] = field(default_factory=list, metadata={
        "help": "emails let in when login is required (case-insensitive; '*@example.com' admits a domain)"})
    allowed_roots: list[str] = field(default_factory=list, metadata={
        "help": "folders that typed paths must stay inside; empty = anywhere when local, the workspace when shared"})
    allowed_hosts: list[str] = field(default_factory=list, metadata={
        "help": "hosts a server URL typed in a shared app may name ('gpu1', 'gpu1:8000', '*.lan'); empty = none"})
    provider: str | None = option(None, "the [auth.NAME] provider st.login uses, when secrets.toml defines several")

    @classmethod
    def from_dict(cls, d: Mapping) -> AccessConfig:
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(d) - known)
        if unknown:
            raise WorkspaceError(f"unknown [access] setting(s) {', '.join(unknown)}: use {', '.join(sorted(known))}")
        cfg = cls(**dict(d))
        for name in ("allowed_reviewers", "allowed_roots", "allowed_hosts"):
            value = getattr(cfg, name)
            if isinstance(value, str):
                value = [value]
            if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
                raise WorkspaceError(f"[access] {name} must be a list of strings")
            setattr(cfg, name, value)
        if not isinstance(cfg.require_login, bool):
            raise WorkspaceError("[access] require_login must be true or false")
        return cfg


def _read_toml(path: Path) -> dict:
    try:
        import tomllib
    except ImportError:  # Python 3.10
        import toml

        return toml.loads(path.read_text(encoding="utf-8"))
    with path.open("rb") as f:
        return tomllib.load(f)


def config_path(workspace: str | os.PathLike) -> Path:
    """``$LOOPBREAK_CONFIG`` when set, else ``<workspace>/loopbreak.toml``."""
    env = os.environ.get(CONFIG_ENV)
    return Path(env).expanduser() if env else Path(workspace).expanduser() / CONFIG_FILE


def load_access(workspace: str | os.PathLike) -> AccessConfig:
    """The access settings for an app started on ``workspace`` (defaults when there is no file)."""
    path = config_path(workspace)
    if not path.exists():
        if os.environ.get(CONFIG_ENV):
            raise WorkspaceError(f"${CONFIG_ENV} names {path}, which does not exist")
        return AccessConfig()
    try:
        data = _read_toml(path)
    except Exception as e:  # a syntax error: say where, and refuse to start open
        raise WorkspaceError(f"cannot read {path}: {e}") from None
    return AccessConfig.from_dict(data.get("access", {}))


def is_shared(cfg: AccessConfig, server_address: str | None) -> bool:
    """Shared: login required, or the server listens on more than the loopback interface."""
    return cfg.require_login or (server_address or "").strip().strip("[]") not in LOOPBACK


def effective_roots(cfg: AccessConfig, workspace: str | os.PathLike, shared: bool) -> list[Path] | None:
    """The folders typed paths must stay inside, resolved; None = no restriction (local use)."""
    if cfg.allowed_roots:
        return [Path(r).expanduser().resolve() for r in cfg.allowed_roots]
    if shared:
        return [Path(workspace).expanduser().resolve()]
    return None


def check_path(path: str | os.PathLike, roots: list[Path] | None, what: str = "path") -> Path:
    """The path resolved (``~`` expanded, relative to the current folder, ``..`` collapsed, every
    symlink followed); AccessDenied when roots are set and it lies outside all of them.

    Use the returned path, not the typed one: it is the file that was checked.
    """
    text = os.fspath(path)
    if "\x00" in text:
        raise AccessDenied(f"{what} contains a NUL character")
    resolved = Path(text).expanduser().resolve()
    if roots is None:
        return resolved
    for root in roots:
        if resolved == root or resolved.is_relative_to(root):
            return resolved
    listed = ", ".join(str(r) for r in roots) or "(none)"
    raise AccessDenied(f"{what} {text!r} resolves to {resolved}, outside the folders this app may use ({listed})")


# Cloud metadata services (AWS, Azure, GCP, Oracle: 169.254.169.254; AWS over IPv6; Alibaba) by address and name.
METADATA = {"169.254.169.254", "fd00:ec2::254", "100.100.100.200", "metadata.google.internal", "metadata"}


def _internal(address: str) -> bool:
    ip = ipaddress.ip_address(address.split("%", 1)[0])
    mapped = getattr(ip, "ipv4_mapped", None)
    return ip.is_link_local or str(ip) in METADATA or bool(mapped and (mapped.is_link_local or str(mapped) in METADATA))


def refuse_internal(url: str) -> tuple[str, int | None]:
    """(host, port) of a server URL; AccessDenied for a scheme other than http(s), or a host that is or
    resolves to a link-local or cloud metadata address (numeric spellings such as 2852039166 included:
    they are resolved as the HTTP client would). A host that does not resolve passes: the request fails."""
    parts = urlsplit(url.strip())
    if parts.scheme not in ("http", "https"):
        raise AccessDenied(f"server URL {url!r}: only http:// and https:// URLs are used")
    try:
        host, port = (parts.hostname or "").rstrip(".").lower(), parts.port
    except ValueError as e:
        raise AccessDenied(f"server URL {url!r}: {e}") from None
    if not host:
        raise AccessDenied(f"server URL {url!r} names no host")
    try:
        addresses = {info[4][0] for info in socket.getaddrinfo(host, port or 80, proto=socket.IPPROTO_TCP)}
    except (socket.gaierror, UnicodeError, OSError):
        addresses = set()
    if host in METADATA or any(_internal(a) for a in addresses):
        raise AccessDenied(f"server URL {url!r} points at a link-local or cloud metadata address: refused")
    return host, port


def check_base_url(url: str, allowed_hosts: list[str] | None) -> str:
    """A typed server URL (or several, comma-separated): each refused if internal (see refuse_internal)
    and, on a shared app (``allowed_hosts`` not None), unless its host or host:port is on the list."""
    urls = [u.strip() for u in url.split(",") if u.strip()]
    for u in urls:
        host, port = refuse_internal(u)
        if allowed_hosts is None:
            continue
        names = [host] + ([f"{host}:{port}"] if port else [])
        if not any(fnmatch.fnmatchcase(n, pattern.strip().lower()) for n in names for pattern in allowed_hosts if pattern.strip()):
            listed = ", ".join(allowed_hosts) or "(none)"
            raise AccessDenied(f"server URL {u!r}: this app is shared and {host} is not in allowed_hosts of "
                               f"{CONFIG_FILE} [access] ({listed})")
    return ", ".join(urls)


def looks_like_path(ref: str) -> bool:
    """A model reference that names a file or folder rather than a hub id or a server's model name."""
    return ref.startswith(("/", ".", "~")) or Path(ref).expanduser().exists()


def check_model_ref(ref: str, roots: list[Path] | None, what: str = "model path") -> str:
    """A typed model: a path is checked (and returned resolved); a hub id or a server's model name passes."""
    ref = ref.strip()
    if roots is None or not ref or not looks_like_path(ref):
        return ref
    return str(check_path(ref, roots, what))


def is_allowed(email: str | None, allowed: list[str]) -> bool:
    """An exact email (case-insensitive) or a '*@domain' pattern on the list; no email, no entry."""
    if not email or "@" not in email:
        return False
    email = email.strip().casefold()
    return any(fnmatch.fnmatchcase(email, pattern.strip().casefold()) for pattern in allowed if pattern.strip())


@dataclass
class Gate:
    """What the app does for this visitor: ``open`` (login not required), ``login`` (show the login
    button), ``refused`` (logged in, not on the list), ``in`` (logged in and allowed)."""

    state: str
    email: str | None = None
    message: str = ""


def gate(cfg: AccessConfig, user: Mapping) -> Gate:
    """The decision for a visitor whose ``st.user`` is ``user`` (a mapping of the identity claims)."""
    if not cfg.require_login:
        return Gate("open")
    if not user.get("is_logged_in"):
        return Gate("login", message="This Loopbreak app is shared: log in to continue.")
    email = user.get("email")
    if not email:
        return Gate("refused", None, "Your login did not give an email address, so this app cannot tell who you are. "
                                     "Ask its owner to request the 'email' scope from the provider.")
    if not is_allowed(email, cfg.allowed_reviewers):
        return Gate("refused", email, f"{email} is not on this app's list of reviewers. Ask its owner to add you "
                                      f"to allowed_reviewers in {CONFIG_FILE}.")
    return Gate("in", email)
