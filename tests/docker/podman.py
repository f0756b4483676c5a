"""Build and run docker/'s images without a Docker engine: Debian's podman and buildah as root.

The images live in a store of their own (STORE), kept between runs: the Debian base made once
per machine with mmdebstrap, the layers `podman build` caches, so a second run rebuilds only
what changed. The store uses the overlay driver: on this kind of machine a build on vfs (which
copies the whole file system at every step) took 4m43s cold and 2m34s with every layer cached,
against 1m30s and 1s on overlay (a store of its own also keeps clear of the default store and
whatever driver that one was made with). `podman run` cannot start containers here (crun:
"cgroups in hybrid mode not supported"), so containers run with `buildah run --isolation chroot`.
"""

from __future__ import annotations

import configparser
import fcntl
import hashlib
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from pathlib import Path

STORE = Path("/var/lib/containers/nyc-taxi-duration-tests")
STORAGE = [
    "--root",
    str(STORE),
    "--runroot",
    "/run/nyc-taxi-duration-tests",
    "--storage-driver",
    "overlay",
]
# What every command that runs something in an image shares with the host: its network (the
# servers the tests start listen on 127.0.0.1) and no namespaces podman cannot make here.
ISOLATION = ["--isolation", "chroot", "--network", "host"]
TOOLS = ("podman", "buildah", "mmdebstrap")
SUITE = "bookworm"  # Python 3.11 as python3, as in the official python:3.11-slim
PACKAGES = ("python3", "python3-venv", "python3-pip", "make", "git", "ca-certificates")
# The image prefix of everything the tests make, and of their working containers.
PREFIX = "nyc-taxi-duration-test"
# pip settings that still mean something inside an image (a file:// index or a local
# constraints file does not exist there).
PIP_NETWORK_SETTINGS = ("index-url", "extra-index-url", "trusted-host", "timeout", "proxy")
# Beside Debian's bundle, not over it: a ca-certificates trigger during a build rewrites that one.
PIP_CA_BUNDLE = "/usr/local/share/test-host-ca/ca-certificates.crt"


def missing_tools() -> str | None:
    """One line saying what to install, or None when podman, buildah and mmdebstrap are there."""
    missing = [tool for tool in TOOLS if shutil.which(tool) is None]
    if missing:
        return (
            f"tests/docker needs {', '.join(missing)}: "
            f"apt-get install -y --no-install-recommends {' '.join(TOOLS)}"
        )
    return None


def run(argv: Sequence[str], log: Path, timeout: float = 1200) -> str:
    """Run a podman/buildah/mmdebstrap command, its output appended to `log`; fail with the end
    of that output and the command when it exits non-zero."""
    started = time.monotonic()
    done = subprocess.run(
        list(argv),
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        stdin=subprocess.DEVNULL,
        text=True,
        timeout=timeout,
    )
    with log.open("a") as out:
        out.write(f"$ {' '.join(argv)}\n{done.stdout}# {time.monotonic() - started:.1f} s\n")
    if done.returncode != 0:
        shown = " ".join(arg for arg in argv if arg not in STORAGE)
        raise RuntimeError(f"{shown}\nexited {done.returncode}:\n{done.stdout[-4000:]}")
    return done.stdout


def podman(*args: str) -> list[str]:
    return ["podman", *STORAGE, *args]


def buildah(*args: str) -> list[str]:
    return ["buildah", *STORAGE, *args]


def image_exists(tag: str) -> bool:
    return subprocess.run(podman("image", "exists", tag), capture_output=True).returncode == 0


@contextmanager
def store_lock() -> Iterator[None]:
    """One builder at a time per machine: two sessions do not both make the base image."""
    STORE.mkdir(parents=True, exist_ok=True)
    with (STORE.parent / f"{STORE.name}.lock").open("w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        yield


# --- the base image -----------------------------------------------------------------------


def apt_mirror(
    sources: Sequence[Path] = (Path("/etc/apt/sources.list"), Path("/etc/apt/sources.list.d")),
) -> str:
    """The Debian archive this machine's apt uses for SUITE (deb822 .sources or one-line .list)."""
    files: list[Path] = []
    for source in sources:
        files += sorted(source.glob("*")) if source.is_dir() else [source]
    for path in files:
        if not path.is_file() or path.suffix not in (".list", ".sources"):
            continue
        text = path.read_text()
        if path.suffix == ".sources":
            for stanza in re.split(r"\n\s*\n", text):
                fields = dict(re.findall(r"^(\w[\w-]*):\s*(.*)$", stanza, flags=re.MULTILINE))
                if (
                    fields.get("Enabled", "yes") != "no"
                    and "deb" in fields.get("Types", "").split()
                    and SUITE in fields.get("Suites", "").split()
                ):
                    return fields["URIs"].split()[0]
        else:
            for line in text.splitlines():
                words = re.sub(r"\[[^]]*\]", "", line).split()  # without [options]
                if len(words) >= 3 and words[0] == "deb" and words[2] == SUITE:
                    return words[1]
    raise RuntimeError(f"no apt source for Debian {SUITE} in {', '.join(map(str, sources))}")


def debian_image(log: Path) -> str:
    """A minimal Debian image from Debian's packages, made once per machine (per mirror and
    package list): no image registry answers here, so `FROM` needs a local image."""
    mirror = apt_mirror()
    recipe = json.dumps([SUITE, mirror, PACKAGES])
    tag = f"localhost/{PREFIX}/debian:{SUITE}-{hashlib.sha256(recipe.encode()).hexdigest()[:12]}"
    if image_exists(tag):
        return tag
    with tempfile.TemporaryDirectory(prefix=f"{PREFIX}-", dir="/var/tmp") as folder:
        tar = Path(folder) / "rootfs.tar"
        include = f"--include={','.join(PACKAGES)}"
        run(["mmdebstrap", "--variant=minbase", include, SUITE, str(tar), mirror], log)
        # What an official image sets and a bare root file system lacks.
        path = "PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"
        changes = ["--change", f"ENV {path}", "--change", "ENV LANG=C.UTF-8"]
        run(podman("import", *changes, str(tar), tag), log)
    return tag


def pip_settings(pip_config: str) -> dict[str, str]:
    """The network settings among `pip config list` lines (files and PIP_* variables alike),
    index URLs that are not http(s) dropped."""
    settings: dict[str, str] = {}
    for key, value in re.findall(r"^\S*?\.([\w-]+)='(.*)'$", pip_config, flags=re.MULTILINE):
        key = "timeout" if key == "default-timeout" else key
        if key not in PIP_NETWORK_SETTINGS:
            continue
        if key.endswith("index-url"):
            value = " ".join(u for u in value.split() if u.startswith(("http://", "https://")))
        if value:
            settings[key] = value
    return settings


def host_trust() -> tuple[Path, dict[str, str]]:
    """This machine's CA bundle (the one pip uses) and pip's network settings: its HTTPS may go
    through a certificate of its own, and pip inside a build knows neither."""
    listed = subprocess.run(
        [sys.executable, "-m", "pip", "config", "list"], capture_output=True, text=True
    ).stdout
    cert = re.search(r"^\S*?\.cert='(.*)'$", listed, flags=re.MULTILINE)
    bundle = Path(cert.group(1) if cert else "/etc/ssl/certs/ca-certificates.crt")
    return bundle, pip_settings(listed)


def trusted_base_image(log: Path) -> str:
    """The Debian image plus this machine's trust for pip (test-only: never in a Dockerfile).
    Rebuilt every time; podman's layer cache makes that a second unless the trust changed."""
    debian = debian_image(log)
    bundle, settings = host_trust()
    config = configparser.ConfigParser()
    config["global"] = {"cert": PIP_CA_BUNDLE, **settings}
    tag = f"localhost/{PREFIX}/base:{SUITE}"
    with tempfile.TemporaryDirectory(prefix=f"{PREFIX}-") as folder:
        context = Path(folder)
        shutil.copy(bundle, context / "ca-certificates.crt")
        with (context / "pip.conf").open("w") as out:
            config.write(out)
        (context / "Containerfile").write_text(
            f"FROM {debian}\n"
            f"COPY ca-certificates.crt {PIP_CA_BUNDLE}\n"
            "COPY pip.conf /etc/pip.conf\n"
        )
        build(context / "Containerfile", context, tag, log, build_args={})
    return tag


def build(
    dockerfile: Path, context: Path, tag: str, log: Path, build_args: Mapping[str, str]
) -> None:
    """`podman build` as `docker build -f <dockerfile> <context>`, RUN steps in a chroot."""
    args = [arg for key, value in build_args.items() for arg in ("--build-arg", f"{key}={value}")]
    run(podman("build", *ISOLATION, *args, "-f", str(dockerfile), "-t", tag, str(context)), log)


def prune(log: Path) -> None:
    """Drop the images no tag points to any more (an older build's layers): an edit to
    pyproject.toml would otherwise leave 1.6 GB of dependencies behind every time."""
    run(podman("image", "prune", "--force"), log)


def config_of(tag: str) -> dict[str, object]:
    """An image's config (Cmd, Env, WorkingDir, User, ...)."""
    done = subprocess.run(
        podman("image", "inspect", "--format", "{{json .Config}}", tag),
        capture_output=True,
        text=True,
        check=True,
    )
    return dict(json.loads(done.stdout))


# --- working containers -------------------------------------------------------------------


class Container:
    """A buildah working container of an image; `command()` runs something in it as the image
    would (its user, working directory and environment, plus `env`)."""

    def __init__(self, image: str, role: str, log: Path) -> None:
        self.name = f"{PREFIX}-{os.getpid()}-{role}"
        run(buildah("from", "--name", self.name, image), log)

    def command(
        self, argv: Sequence[str], env: Mapping[str, str], volumes: Sequence[str] = ()
    ) -> list[str]:
        options = [arg for key, value in env.items() for arg in ("-e", f"{key}={value}")]
        options += [arg for volume in volumes for arg in ("-v", volume)]
        return buildah("run", *ISOLATION, *options, self.name, "--", *argv)

    def remove(self) -> None:
        subprocess.run(buildah("rm", self.name), capture_output=True)


def remove_stale_containers() -> None:
    """Working containers left by a test process that no longer exists (killed mid-test)."""
    listed = subprocess.run(
        buildah("containers", "--format", "{{.ContainerName}}"), capture_output=True, text=True
    ).stdout
    for name in listed.split():
        found = re.fullmatch(rf"{PREFIX}-(\d+)-\w+", name)
        if found and not Path(f"/proc/{found.group(1)}").exists():
            subprocess.run(buildah("rm", name), capture_output=True)
