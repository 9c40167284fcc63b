"""Builds reach the package sources the host's settings name on this machine, read-only, and nothing
else: a local PEP 503 index whose pages link to wheels beside it (a mirror on disk lays out
`simple/` next to `files/`), a wheelhouse of symlinks, a find-links page, apt's `file:`
repositories. Each test is written as the failure it guards against: pip in a build found the
index's entry for a package and then not its wheel, because only the directory the setting named
was mounted."""

from __future__ import annotations

import base64
import hashlib
import io
import uuid
import zipfile
from pathlib import Path

import pytest
from sandbox_fixtures import backend_config
from test_environment_builds import installs_task, run

from agentsd.envs.terminal import TerminalEnv
from agentsd.sandboxes import builds, package_sources


def make_wheel(directory: Path, project: str, value: str) -> Path:
    """A pure-Python wheel of `project` (module of the same name, VALUE = value), written by hand."""
    module = project.replace("-", "_")
    dist = f"{module}-1.0.dist-info"
    files = {
        f"{module}/__init__.py": f"VALUE = {value!r}\n",
        f"{dist}/METADATA": f"Metadata-Version: 2.1\nName: {project}\nVersion: 1.0\n",
        f"{dist}/WHEEL": "Wheel-Version: 1.0\nGenerator: hand\nRoot-Is-Purelib: true\nTag: py3-none-any\n",
    }
    record = ""
    for name, text in files.items():
        digest = base64.urlsafe_b64encode(hashlib.sha256(text.encode()).digest()).rstrip(b"=").decode()
        record += f"{name},sha256={digest},{len(text.encode())}\n"
    files[f"{dist}/RECORD"] = record + f"{dist}/RECORD,,\n"
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as archive:
        for name, text in files.items():
            archive.writestr(name, text)
    directory.mkdir(parents=True, exist_ok=True)
    wheel = directory / f"{module}-1.0-py3-none-any.whl"
    wheel.write_bytes(buffer.getvalue())
    return wheel


def index_page(directory: Path, links: dict[str, str]) -> None:
    directory.mkdir(parents=True, exist_ok=True)
    anchors = "".join(f'<a href="{href}">{name}</a>\n' for name, href in links.items())
    (directory / "index.html").write_text(f"<!DOCTYPE html><html><body>\n{anchors}</body></html>\n")


def test_a_build_installs_from_a_local_index_and_a_wheelhouse_of_symlinks_and_cannot_write_them(
    env: TerminalEnv, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # names no index anywhere has: only the sources on this machine can satisfy the installs
    nonce = uuid.uuid4().hex[:8]
    indexed, linked = f"agentsd-indexed-{nonce}", f"agentsd-linked-{nonce}"
    mirror = tmp_path / "mirror"
    wheel = make_wheel(mirror / "files", indexed, f"index-{nonce}")
    sha = hashlib.sha256(wheel.read_bytes()).hexdigest()
    index_page(mirror / "simple", {indexed: f"{indexed}/"})
    index_page(mirror / "simple" / indexed, {wheel.name: f"../../files/{wheel.name}#sha256={sha}"})
    store_wheel = make_wheel(tmp_path / "store", linked, f"link-{nonce}")
    wheelhouse = tmp_path / "wheelhouse"
    wheelhouse.mkdir()
    (wheelhouse / store_wheel.name).symlink_to(f"../store/{store_wheel.name}")
    monkeypatch.setenv("PIP_INDEX_URL", f"file://{mirror}/simple")
    monkeypatch.setenv("PIP_FIND_LINKS", str(wheelhouse))

    dockerfile = (
        f"FROM python:3.11-slim-bookworm\nWORKDIR /app\nRUN echo {nonce} > /app/nonce.txt\n"
        f"RUN pip install --no-cache-dir {indexed} {linked}\n"
        f"RUN (touch {mirror}/files/written 2>/dev/null || rm -f {wheelhouse}/{store_wheel.name} 2>/dev/null"
        " && echo wrote || echo refused) > /app/write.txt\n"
    )
    env.reset(options={"task": installs_task(tmp_path / "t", dockerfile)})
    imports = f"python3 -c 'import {indexed.replace('-', '_')} as a, {linked.replace('-', '_')} as b; "
    assert run(env, imports + "print(a.VALUE, b.VALUE)'") == (0, f"index-{nonce} link-{nonce}")
    # the sources were there to read, never to write, and the episode does not see them
    assert run(env, "cat /app/write.txt") == (0, "refused")
    assert not (mirror / "files" / "written").exists() and (wheelhouse / store_wheel.name).exists()
    assert run(env, f"ls {mirror}")[0] != 0


def test_the_paths_pip_settings_name_include_what_their_pages_and_links_reach(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    mirror, other, store, wheelhouse = (tmp_path / n for n in ("mirror", "other", "store", "wheelhouse"))
    wheel = make_wheel(mirror / "files", "probe", "x")
    elsewhere = make_wheel(other / "pool", "other-probe", "y")
    index_page(mirror / "simple" / "probe", {"a": f"../../files/{wheel.name}#0", "b": f"file://{elsewhere}"})
    # a mirror's packages/ tree, a directory per file: one bind for the tree, not one per file
    for name in ("deep-a", "deep-b"):
        deep = make_wheel(mirror / "packages" / name[-1] / uuid.uuid4().hex, name, "d")
        index_page(
            mirror / "simple" / name, {"a": f"../../packages/{name[-1]}/{deep.parent.name}/{deep.name}"}
        )
    # links that reach the whole host, nothing, or the network are never named
    index_page(
        mirror / "simple" / "hostile", {"a": "../../../../../../../../etc/passwd", "b": "../../no.whl"}
    )
    index_page(mirror / "simple" / "remote", {"a": "https://user:secret@example.invalid/probe-1.whl"})
    private = make_wheel(tmp_path / "private", "private", "k")  # only its owner may read it: a secret
    (tmp_path / "private").chmod(0o700)
    index_page(mirror / "simple" / "private", {"a": f"../../private/{private.name}"})
    make_wheel(store, "stored", "z")
    wheelhouse.mkdir()
    (wheelhouse / "stored-1.0-py3-none-any.whl").symlink_to(store / "stored-1.0-py3-none-any.whl")
    page = tmp_path / "links.html"
    page.write_text(f'<a href="other/pool/{elsewhere.name}">w</a><a href="/">root</a>')
    key, conf = tmp_path / "client.pem", tmp_path / "pip.conf"
    key.write_text("-----BEGIN PRIVATE KEY-----\n")
    conf.write_text(
        f"[global]\nindex-url = file://{mirror}/simple\nfind-links = {wheelhouse}\n    {page}\n"
        f"extra-index-url = https://user:secret@example.invalid/simple file:///nonexistent/simple\n"
        f"client-cert = {key}\nlog = {tmp_path / 'pip.log'}\n[install]\nclient_cert = {key}\n"
    )
    (tmp_path / "pip.log").write_text("")
    monkeypatch.setenv("PIP_CONFIG_FILE", str(conf))
    monkeypatch.setenv("PIP_CLIENT_CERT", str(key))
    monkeypatch.setenv("PIP_EXTRA_INDEX_URL", f"file:{mirror}/simple")
    for name in ("PIP_INDEX_URL", "PIP_FIND_LINKS", "PIP_NO_INDEX"):
        monkeypatch.delenv(name, raising=False)

    pip = package_sources.pip_settings()
    named = {p for p in pip.paths if p.startswith(str(tmp_path))}
    assert named == {
        f"{mirror}/simple",
        f"{mirror}/files",
        f"{mirror}/packages",
        str(other / "pool"),
        str(wheelhouse),
        str(store),
        str(page),
    }
    assert "/" not in pip.paths and "/etc" not in pip.paths and str(tmp_path / "private") not in pip.paths
    # a client certificate's key is a secret a task's build steps must not read
    assert str(key) not in pip.conf and "PIP_CLIENT_CERT" not in pip.env
    assert pip.env["PIP_EXTRA_INDEX_URL"] == f"file:{mirror}/simple"
    settings = builds.host_settings()
    assert named <= set(settings.paths) and str(key) not in settings.files["pip.conf"].decode()


def test_the_paths_apt_sources_name_are_their_local_repositories_and_keyrings(tmp_path: Path) -> None:
    # a file: repository in the host's sources made every `apt-get update` of a local build fail
    repo, pool, keyring = tmp_path / "repo", tmp_path / "copy pool", tmp_path / "keys" / "local.gpg"
    for directory in (repo, pool, keyring.parent):
        directory.mkdir()
    keyring.write_bytes(b"key")
    etc_apt = tmp_path / "apt"
    (etc_apt / "sources.list.d").mkdir(parents=True)
    (etc_apt / "sources.list").write_text(
        f"# deb file:{tmp_path}/commented ./\n"
        f"deb [arch=amd64 signed-by={keyring}] file:{repo} ./\n"
        "deb https://user:secret@example.invalid/debian bookworm main\n"
        f"deb file:/nonexistent/repo ./\n"
    )
    (etc_apt / "sources.list.d" / "pool.sources").write_text(
        f"Types: deb\nURIs: copy://{str(pool).replace(' ', '%20')}\n  http://deb.debian.org/debian\n"
        "Suites: ./\nSigned-By: -----BEGIN PGP PUBLIC KEY BLOCK-----\n .\n abc\n\n"
        f"Types: deb\nURIs: file:{tmp_path}/disabled\nSuites: ./\nEnabled: no\n"
    )
    (tmp_path / "disabled").mkdir()
    (etc_apt / "sources.list.d" / "ignored.list.disabled").write_text(f"deb file:{tmp_path} ./\n")
    assert sorted(package_sources.apt_paths(etc_apt)) == sorted([str(repo), str(pool), str(keyring)])


@pytest.mark.docker
def test_a_docker_build_whose_engine_cannot_bind_this_machines_sources_goes_on_without_them(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    # a unix socket forwarded from another machine: its engine refuses to bind a path it lacks,
    # which used to fail every build, including those that need no local source
    from agentsd.sandboxes import docker_build

    config = backend_config("docker")
    missing = f"/nonexistent-agentsd-{uuid.uuid4().hex[:8]}"
    real = docker_build.host_settings
    monkeypatch.setattr(docker_build, "host_settings", lambda: real()._replace(paths=[missing]))
    nonce = uuid.uuid4().hex[:8]
    environment = TerminalEnv(sandbox=config)
    try:
        dockerfile = f"FROM python:3.11-slim-bookworm\nWORKDIR /app\nRUN echo {nonce} > /app/nonce.txt\n"
        environment.reset(options={"task": installs_task(tmp_path / "t", dockerfile)})
        assert run(environment, "cat /app/nonce.txt") == (0, nonce)
    finally:
        environment.close()
    said = [r.getMessage() for r in caplog.records]
    assert any("building without them" in m and missing in m for m in said)
