"""The package sources on this machine that the host's pip and apt settings name, and the pip
settings a build carries: what a build must see, at the same paths and read-only, to install what
the host installs.

pip: the configuration files pip would read, in pip's order (global: $XDG_CONFIG_DIRS/pip/pip.conf
and /etc/pip.conf; user: ~/.pip/pip.conf and $XDG_CONFIG_HOME/pip/pip.conf, skipped when
PIP_CONFIG_FILE names a file; then PIP_CONFIG_FILE; later wins), and the PIP_* variables. Their
local sources are named with what they lead to: a `file:` index is a PEP 503 directory whose
project pages may link anywhere on this machine (a mirror on disk lays out simple/ beside files/,
and mounting only simple/ gave pip an entry whose wheel was not there), so the directories its
pages' links reach are named too (inside the mirror's root, the directory that holds simple/, the
one right under the root: files/ or packages/, not a directory per file); a find-links directory's
symlinked files and HTML pages, and a find-links page's links, likewise. Constraint and
requirement files are named as they are.

apt: `file:` and `copy:` repositories and Signed-By keyrings in sources.list, sources.list.d/*.list
and sources.list.d/*.sources. Only the local backend's builds read the host's /etc/apt; a docker
build's apt reads its image's own sources.

Guaranteed: a path is named only if it exists here, is absolute, is readable to every user here
(what only its owner may read, ~/.ssh or a key file, is taken for a secret), and is neither /, a top
system directory (/usr, /etc, /opt, /home ...), the home directory, nor under /proc, /sys or /dev;
network URLs are passed on as the host has them and never read, logged or named (they may carry
credentials); a client certificate (its private key) is never carried into a build: a build runs the
task author's commands as root, and an index that needs one is not reached from a build.

Not guaranteed: a bound directory shows the build everything in it, not only the files a setting or
page names, and the settings and an index's pages are trusted as the host's own (a page that links
into a directory of secrets shows them to builds); links are followed one step (a page's links, a
symlink's target, not symlinks inside what they reach), and a page's <base> tag is not honoured;
pip's site file (the pip.conf of whichever interpreter runs pip) and apt's Dir::Etc settings are not
read; the settings are read on this machine, so a build on another machine's engine does not see
these paths (docker_build); every project page of a local index is read for each build (0.3 s for
the 900 of one mirror on disk).
"""

from __future__ import annotations

import configparser
import html
import io
import os
import re
import stat
from pathlib import Path
from typing import NamedTuple
from urllib.parse import unquote, urljoin, urlsplit

_SOURCE_OPTIONS = ("index-url", "extra-index-url")  # PEP 503 directories
_LINK_OPTIONS = ("find-links",)  # directories of files, or pages of links
_FILE_OPTIONS = ("constraint", "requirement", "build-constraint")  # read as they are
_SECRET_OPTIONS = ("client-cert",)  # a private key: never carried into a build
_CARRIED_ELSEWHERE = ("cert", "config-file")  # the CA bundle and the merged file are the build's own
_SYSTEM = frozenset(
    {
        *("/bin", "/boot", "/etc", "/home", "/lib", "/lib32", "/lib64", "/libx32", "/media", "/mnt"),
        *("/opt", "/root", "/run", "/sbin", "/srv", "/tmp", "/usr", "/var", "/usr/local", "/usr/lib"),
        "/var/lib",
    }
)
_HREF = re.compile(r"""href\s*=\s*(?:"([^"]*)"|'([^']*)'|([^\s>]+))""", re.IGNORECASE)
_PAGE_BYTES = 8 << 20  # a page bigger than this is not an index page


class PipSettings(NamedTuple):
    """The host's pip settings as a build carries them: the merged configuration ("" when none),
    the PIP_* variables, and the local paths both name."""

    conf: str
    env: dict[str, str]
    paths: list[str]


def pip_settings() -> PipSettings:
    """The host's pip configuration and PIP_* variables, without what travels on its own (the CA
    bundle) or must not travel (a client certificate), and the local paths they name."""
    merged = configparser.ConfigParser(interpolation=None)
    for path in _pip_files():
        try:
            merged.read(path)
        except (configparser.Error, UnicodeDecodeError, OSError):
            continue  # pip would refuse it too; the build goes on without it
    paths: list[str] = []
    for section in merged.sections():
        for option, value in merged.items(section):
            name = option.lower().replace("_", "-")
            if name in _SECRET_OPTIONS or name in _CARRIED_ELSEWHERE:
                merged.remove_option(section, option)
            else:
                paths += _pip_paths(name, value)
    text = io.StringIO()
    merged.write(text)
    env: dict[str, str] = {}
    for variable, value in os.environ.items():
        name = variable.removeprefix("PIP_").lower().replace("_", "-")
        if variable.startswith("PIP_") and name not in (*_SECRET_OPTIONS, *_CARRIED_ELSEWHERE):
            env[variable] = value
            paths += _pip_paths(name, value)
    return PipSettings(text.getvalue() if merged.sections() else "", env, visible(paths))


def apt_paths(etc_apt: Path = Path("/etc/apt")) -> list[str]:
    """The local repositories (`file:`, `copy:`) and the keyrings the apt sources under `etc_apt`
    name."""
    sources = [etc_apt / "sources.list", *sorted((etc_apt / "sources.list.d").glob("*.list"))]
    found: list[str] = []
    for path in sources:
        for line in _read(path).splitlines():
            words = line.split("#", 1)[0].split()
            if not words or words[0] not in ("deb", "deb-src"):
                continue
            options, rest = _one_line_options(" ".join(words[1:]))
            if rest:
                found += _apt_uri(rest[0])
            found += [_plain(k) for k in options.get("signed-by", "").split(",") if k.startswith("/")]
    for path in sorted((etc_apt / "sources.list.d").glob("*.sources")):
        for stanza in _deb822(_read(path)):
            if stanza.get("enabled", "yes").strip().lower() == "no":
                continue
            for uri in stanza.get("uris", "").split():
                found += _apt_uri(uri)
            keys = stanza.get("signed-by", "").strip()
            if keys and "\n" not in keys:  # else an inline key, not a path
                found += [_plain(k) for k in keys.split() if k.startswith("/")]
    return visible(found)


def visible(paths: list[str]) -> list[str]:
    """The paths a build may see: existing, absolute, readable to all, never the host's root, a top
    system directory, the home directory or kernel and device trees; one bind for a directory and
    what it holds."""
    home = os.path.normpath(os.path.expanduser("~"))
    kept = set()
    for raw in paths:
        path = os.path.normpath(raw)
        if (
            not path.startswith("/")
            or path in _SYSTEM
            or path in ("/", home)
            or path.startswith(("/proc/", "/sys/", "/dev/"))
            or path in ("/proc", "/sys", "/dev")
            or not os.path.exists(path)
            or not _readable_to_all(path)
        ):
            continue
        kept.add(path)
    # a directory already bound carries what lies under it
    return sorted(p for p in kept if not any(str(a) in kept for a in Path(p).parents))


def _readable_to_all(path: str) -> bool:
    # what only its owner may read (~/.ssh, ~/.gnupg, a key file) is taken for a secret
    try:
        mode = os.stat(path).st_mode
    except OSError:
        return False
    need = stat.S_IROTH | (stat.S_IXOTH if stat.S_ISDIR(mode) else 0)
    return mode & need == need


# ---------------------------------------------------------------------------- pip


def _pip_files() -> list[Path]:
    """The configuration files pip reads, lowest precedence first (pip's own order)."""
    config_dirs = os.environ.get("XDG_CONFIG_DIRS") or "/etc/xdg"
    files = [Path(d) / "pip" / "pip.conf" for d in config_dirs.split(":") if d]
    files.append(Path("/etc/pip.conf"))
    env_file = os.environ.get("PIP_CONFIG_FILE")
    if not (env_file and os.path.exists(env_file)):  # pip skips the user's files then
        config_home = os.environ.get("XDG_CONFIG_HOME") or os.path.expanduser("~/.config")
        files += [Path("~/.pip/pip.conf").expanduser(), Path(config_home) / "pip" / "pip.conf"]
    if env_file:
        files.append(Path(env_file))
    return [f for f in files if f.is_file()]


def _pip_paths(option: str, value: str) -> list[str]:
    """The local paths one pip setting names, with what they lead to; none for an option that names
    no source (a log file or a cache directory stays the host's)."""
    found: list[str] = []
    for item in value.split():
        path = _local(item)
        if path is None or not os.path.exists(path):
            continue
        try:
            if option in _SOURCE_OPTIONS:
                found += [path, *(_index_targets(path) if os.path.isdir(path) else [])]
            elif option in _LINK_OPTIONS:
                found += [path, *_find_links_targets(path)]
            elif option in _FILE_OPTIONS:
                found.append(path)
        except OSError:  # unreadable, or changed while read: pip would not get further than this
            found.append(path)
    return found


def _index_targets(index: str) -> list[str]:
    """Where a PEP 503 index directory's pages link to on this machine."""
    found: list[str] = []
    pages = [os.path.join(index, "index.html")]
    with os.scandir(index) as entries:
        pages += [os.path.join(e.path, "index.html") for e in entries if e.is_dir()]
    for page in pages:
        found += _page_targets(page)
    return _collapse(sorted(set(found)), os.path.dirname(index))


def _find_links_targets(location: str) -> list[str]:
    """What a find-links directory's symlinks and pages, or a find-links page, reach."""
    if os.path.isfile(location):
        return _page_targets(location)
    found: list[str] = []
    with os.scandir(location) as entries:
        for entry in entries:
            if entry.is_symlink():
                # resolved as the build resolves it: from the link's own directory, bound at its path
                found.append(os.path.dirname(os.path.normpath(os.path.join(location, os.readlink(entry)))))
            elif entry.name.lower().endswith((".html", ".htm")) and entry.is_file():
                found += _page_targets(entry.path)
    return found


def _collapse(directories: list[str], within: str) -> list[str]:
    """Each directory inside `within` (what holds an index: a mirror's root) as the directory it lies
    in right under `within` (a mirror's packages/ tree holds a directory per file, each a mount
    otherwise); the others as they are."""
    if within == "/":
        return directories
    collapsed = set()
    for directory in directories:
        inside = os.path.relpath(directory, within)
        top = inside.split(os.sep)[0]
        collapsed.add(directory if top in (".", "..") else os.path.join(within, top))
    return sorted(collapsed)


def _page_targets(page: str) -> list[str]:
    """The directories of the local files an HTML page links to (relative to the page, or file:
    URLs)."""
    try:
        with open(page, "rb") as handle:
            text = handle.read(_PAGE_BYTES).decode("utf-8", errors="replace")
    except OSError:
        return []
    base = Path(page).as_uri()
    found = set()
    for match in _HREF.finditer(text):
        href = html.unescape(next(g for g in match.groups() if g is not None)).split("#", 1)[0]
        try:
            target = _local(urljoin(base, href)) if href else None
        except ValueError:  # a link pip could not follow either
            continue
        if target is not None and os.path.isfile(target):
            found.add(os.path.dirname(target))
    return sorted(found)


def _local(item: str) -> str | None:
    """The path a setting's value names on this machine: an absolute path or a `file:` URL on this
    host; None for anything else (network URLs among them)."""
    if item.startswith("/"):
        return os.path.normpath(item)
    if not item.lower().startswith("file:"):
        return None
    try:
        parts = urlsplit(item)
    except ValueError:  # not a URL pip could use either
        return None
    if parts.netloc not in ("", "localhost") or not parts.path.startswith("/"):
        return None
    return os.path.normpath(unquote(parts.path))


# ---------------------------------------------------------------------------- apt


def _apt_uri(uri: str) -> list[str]:
    scheme, _, rest = uri.partition(":")
    if scheme.lower() not in ("file", "copy") or not rest:
        return []
    path = _local("file:" + rest)
    return [path] if path else []


def _plain(path: str) -> str:
    return os.path.normpath(unquote(path))


def _one_line_options(rest: str) -> tuple[dict[str, str], list[str]]:
    """A one-line source's [options] (name -> value) and the words after them."""
    options: dict[str, str] = {}
    if rest.startswith("["):
        inside, _, rest = rest[1:].partition("]")
        for word in inside.split():
            name, _, value = word.partition("=")
            options[name.lower().rstrip("+-")] = value
    return options, rest.split()


def _deb822(text: str) -> list[dict[str, str]]:
    """The stanzas of a deb822 .sources file (field names lower-cased, continuation lines joined
    with newlines)."""
    stanzas: list[dict[str, str]] = []
    current: dict[str, str] = {}
    field = ""
    for line in text.splitlines():
        if line.startswith("#"):
            continue
        if not line.strip():
            if current:
                stanzas.append(current)
            current, field = {}, ""
        elif line[0] in " \t" and field:
            current[field] += "\n" + line.strip()
        elif ":" in line:
            field, _, value = line.partition(":")
            field = field.strip().lower()
            current[field] = value.strip()
    if current:
        stanzas.append(current)
    return stanzas


def _read(path: Path) -> str:
    try:
        return path.read_text(errors="replace")
    except OSError:
        return ""
