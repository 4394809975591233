#!/usr/bin/env python3
"""Builds the end-to-end tests' container image as an OCI image-layout tarball, with no registry:
one layer holding /bin/busybox (from Debian's busybox-static) and symlinks for the applets the
tests use. Usage: build_image.py OUT.tar [NAME] (default NAME mini.local/busybox:1.0); with
BUILD_IMAGE_VERSION set, /etc/version holds its text, so each version has its own digest; with
BUILD_IMAGE_RANDOM_MB=N, /random holds N MiB of random bytes (a large image); with
BUILD_IMAGE_FILES=/a:/b, those host files are copied to the same paths (e.g. a binary and its
libraries)."""

import hashlib
import io
import json
import os
import platform
import sys
import tarfile

APPLETS = [
    "sh", "sleep", "httpd", "nc", "cat", "echo", "ls", "env", "nslookup", "true", "false", "tar",
    "mkdir", "id", "hostname", "ps", "kill", "date", "seq", "head", "tail", "grep", "printf", "test",
    "touch", "rm", "sed", "dd", "yes", "wc", "mount", "df", "ip", "ifconfig", "uname", "pwd", "cp",
    "mv", "chmod", "stat", "find", "xargs", "sort", "uniq", "tr", "cut", "awk", "base64", "md5sum",
    "sha256sum", "timeout", "readlink", "ln", "whoami", "free", "top", "watch", "ping", "route",
]


def sha256(data: bytes) -> str:
    return "sha256:" + hashlib.sha256(data).hexdigest()


def add_bytes(tar: tarfile.TarFile, name: str, data: bytes, mode: int = 0o644) -> None:
    info = tarfile.TarInfo(name)
    info.size = len(data)
    info.mode = mode
    info.mtime = 0
    tar.addfile(info, io.BytesIO(data))


def layer(busybox: bytes) -> bytes:
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w", format=tarfile.PAX_FORMAT) as tar:
        for d in ["bin", "tmp", "etc", "var", "var/www", "root"]:
            info = tarfile.TarInfo(d)
            info.type = tarfile.DIRTYPE
            info.mode = 0o1777 if d == "tmp" else 0o755
            info.mtime = 0
            tar.addfile(info)
        add_bytes(tar, "bin/busybox", busybox, 0o755)
        for applet in APPLETS:
            info = tarfile.TarInfo("bin/" + applet)
            info.type = tarfile.SYMTYPE
            info.linkname = "busybox"
            info.mode = 0o777
            info.mtime = 0
            tar.addfile(info)
        add_bytes(tar, "etc/passwd", b"root:x:0:0:root:/root:/bin/sh\nnobody:x:65534:65534:nobody:/:/bin/false\n")
        add_bytes(tar, "etc/group", b"root:x:0:\nnobody:x:65534:\n")
        add_bytes(tar, "var/www/index.html", b"hello from mini\n")
        random_mb = int(os.environ.get("BUILD_IMAGE_RANDOM_MB", "0") or "0")
        if random_mb > 0:
            add_bytes(tar, "random", os.urandom(random_mb << 20))
        dirs = set()
        for path in filter(None, os.environ.get("BUILD_IMAGE_FILES", "").split(":")):
            parts = path.strip("/").split("/")
            for i in range(1, len(parts)):
                d = "/".join(parts[:i])
                if d not in dirs and d not in ("bin", "tmp", "etc", "var", "root"):
                    dirs.add(d)
                    info = tarfile.TarInfo(d)
                    info.type = tarfile.DIRTYPE
                    info.mode = 0o755
                    info.mtime = 0
                    tar.addfile(info)
            with open(path, "rb") as f:
                add_bytes(tar, "/".join(parts), f.read(), 0o755)
        version = os.environ.get("BUILD_IMAGE_VERSION", "")
        if version:
            add_bytes(tar, "etc/version", version.encode() + b"\n")
    return buf.getvalue()


def main() -> None:
    out = sys.argv[1]
    name = sys.argv[2] if len(sys.argv) > 2 else "mini.local/busybox:1.0"
    with open("/bin/busybox", "rb") as f:
        busybox = f.read()
    arch = {"x86_64": "amd64", "aarch64": "arm64"}.get(platform.machine(), platform.machine())
    layer_tar = layer(busybox)
    config = json.dumps({
        "architecture": arch,
        "os": "linux",
        "config": {"Env": ["PATH=/bin"], "Cmd": ["sh"], "WorkingDir": "/"},
        "rootfs": {"type": "layers", "diff_ids": [sha256(layer_tar)]},
        "history": [{"created_by": "tests/e2e/build_image.py"}],
    }, sort_keys=True).encode()
    manifest = json.dumps({
        "schemaVersion": 2,
        "mediaType": "application/vnd.oci.image.manifest.v1+json",
        "config": {"mediaType": "application/vnd.oci.image.config.v1+json",
                   "digest": sha256(config), "size": len(config)},
        "layers": [{"mediaType": "application/vnd.oci.image.layer.v1.tar",
                    "digest": sha256(layer_tar), "size": len(layer_tar)}],
    }, sort_keys=True).encode()
    index = json.dumps({
        "schemaVersion": 2,
        "mediaType": "application/vnd.oci.image.index.v1+json",
        "manifests": [{
            "mediaType": "application/vnd.oci.image.manifest.v1+json",
            "digest": sha256(manifest), "size": len(manifest),
            "platform": {"architecture": arch, "os": "linux"},
            "annotations": {"io.containerd.image.name": name,
                            "org.opencontainers.image.ref.name": name.rsplit(":", 1)[-1]},
        }],
    }, sort_keys=True).encode()
    tmp = out + ".tmp"
    with tarfile.open(tmp, mode="w") as tar:
        add_bytes(tar, "oci-layout", b'{"imageLayoutVersion":"1.0.0"}')
        add_bytes(tar, "index.json", index)
        for blob in (layer_tar, config, manifest):
            add_bytes(tar, "blobs/sha256/" + sha256(blob)[7:], blob)
    os.replace(tmp, out)


if __name__ == "__main__":
    main()
