"""`make image`: the authorization server as an OCI container image without a Docker daemon (an
OCI image layout directory and a tarball of it), and `istio/authserver.yaml` rendered into
`target/istio/` with the image pinned by digest.

    python scripts/image.py <static binary> <out-dir> <tag>

One layer, built deterministically (sorted entries, no times, root-owned files; the same binary
gives the same digest): the binary at /usr/local/bin, /etc/passwd and /etc/group naming the
non-root user 65532 the image runs as, and /var/lib/mcp-auth (the SQLite directory) owned by it.
No shell, no libc, no CA bundle: the binary is static and carries its TLS roots (webpki-roots).
"""

import gzip
import hashlib
import io
import json
import re
import sys
import tarfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from oci import ROOT, blob, canonical  # noqa: E402  (one way of writing blobs for both images)

MANIFEST_TYPE = "application/vnd.oci.image.manifest.v1+json"
CONFIG_TYPE = "application/vnd.oci.image.config.v1+json"
LAYER_TYPE = "application/vnd.oci.image.layer.v1.tar+gzip"
BINARY = "usr/local/bin/mcp-mesh-authserver"
USER = 65532  # the `nonroot` of distroless images; istio/authserver.yaml runs as it too
IMAGE = "ghcr.io/example/mcp-mesh-authserver"


def layer_tar(binary: bytes) -> bytes:
    """The root filesystem as an uncompressed tar (its digest is the config's diff_id)."""
    entries = [
        ("etc/", None, 0o755, 0), ("etc/group", f"root:x:0:\nnonroot:x:{USER}:\n".encode(), 0o644, 0),
        ("etc/passwd", f"root:x:0:0:root:/root:/sbin/nologin\nnonroot:x:{USER}:{USER}:nonroot:/home/nonroot:/sbin/nologin\n".encode(), 0o644, 0),
        ("home/", None, 0o755, 0), ("home/nonroot/", None, 0o700, USER),
        ("tmp/", None, 0o1777, 0),
        ("usr/", None, 0o755, 0), ("usr/local/", None, 0o755, 0), ("usr/local/bin/", None, 0o755, 0),
        (BINARY, binary, 0o755, 0),
        ("var/", None, 0o755, 0), ("var/lib/", None, 0o755, 0), ("var/lib/mcp-auth/", None, 0o700, USER),
    ]
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w", format=tarfile.PAX_FORMAT) as tar:
        for name, data, mode, owner in sorted(entries):
            info = tarfile.TarInfo(name.rstrip("/"))
            info.mtime, info.mode, info.uid, info.gid = 0, mode, owner, owner
            if data is None:
                info.type = tarfile.DIRTYPE
                tar.addfile(info)
            else:
                info.size = len(data)
                tar.addfile(info, io.BytesIO(data))
    return buffer.getvalue()


def build(binary: Path, out: Path, tag: str) -> dict:
    layout = out / "layout"
    tar = layer_tar(binary.read_bytes())
    compressed = gzip.compress(tar, compresslevel=6, mtime=0)
    layer = blob(layout, compressed)
    config = canonical({
        "created": "1970-01-01T00:00:00Z",
        "architecture": "amd64",
        "os": "linux",
        "config": {
            "User": f"{USER}:{USER}",
            "Entrypoint": [f"/{BINARY}"],
            "WorkingDir": "/var/lib/mcp-auth",
            "ExposedPorts": {"9000/tcp": {}},
            "Labels": {"org.opencontainers.image.title": "mcp-mesh-authserver",
                       "org.opencontainers.image.version": tag,
                       "org.opencontainers.image.licenses": "Apache-2.0"},
        },
        "rootfs": {"type": "layers", "diff_ids": [f"sha256:{hashlib.sha256(tar).hexdigest()}"]},
        "history": [{"created": "1970-01-01T00:00:00Z", "created_by": "scripts/image.py"}],
    })
    config_digest = blob(layout, config)
    manifest = canonical({
        "schemaVersion": 2,
        "mediaType": MANIFEST_TYPE,
        "config": {"mediaType": CONFIG_TYPE, "digest": f"sha256:{config_digest}", "size": len(config)},
        "layers": [{"mediaType": LAYER_TYPE, "digest": f"sha256:{layer}", "size": len(compressed)}],
    })
    manifest_digest = blob(layout, manifest)
    (layout / "oci-layout").write_text(json.dumps({"imageLayoutVersion": "1.0.0"}))
    (layout / "index.json").write_bytes(canonical({
        "schemaVersion": 2,
        "manifests": [{"mediaType": MANIFEST_TYPE, "digest": f"sha256:{manifest_digest}", "size": len(manifest),
                       "annotations": {"org.opencontainers.image.ref.name": tag}}],
    }))
    tarball = out / "mcp-mesh-authserver-oci.tar"
    with tarfile.open(tarball, "w") as archive:  # deterministic, as the layer
        for path in sorted(layout.rglob("*")):
            if path.is_file():
                info = tarfile.TarInfo(str(path.relative_to(layout)))
                data = path.read_bytes()
                info.size, info.mtime, info.mode = len(data), 0, 0o644
                archive.addfile(info, io.BytesIO(data))
    return {"manifest": manifest_digest, "layout": layout, "tarball": tarball}


def render_manifest(out: Path, tag: str, manifest_digest: str) -> Path:
    """`istio/authserver.yaml` with the image pinned: `<image>:<tag>@sha256:<digest>`."""
    template = (ROOT / "istio" / "authserver.yaml").read_text()
    pinned, count = re.subn(rf"image: {re.escape(IMAGE)}:\S+", f"image: {IMAGE}:{tag}@sha256:{manifest_digest}", template)
    if count != 1:
        raise SystemExit(f"istio/authserver.yaml: expected one `image: {IMAGE}:<tag>` line, found {count}")
    target = out.parent / "istio"
    target.mkdir(parents=True, exist_ok=True)
    path = target / "authserver.yaml"
    path.write_text(pinned)
    return path


def main(binary, out, tag):
    out = Path(out)
    result = build(Path(binary), out, tag)
    rendered = render_manifest(out, tag, result["manifest"])
    print(f"OCI layout:   {result['layout']}")
    print(f"OCI tarball:  {result['tarball']}")
    print(f"image digest: sha256:{result['manifest']}   (pinned in {rendered})")
    print("push it (the digest is kept), e.g.:")
    print(f"  skopeo copy --preserve-digests oci:{result['layout']}:{tag} docker://{IMAGE}:{tag}")
    print(f"  crane push {result['layout']} {IMAGE}:{tag}")
    print(f"load it into a local daemon: podman load -i {result['tarball']}")


if __name__ == "__main__":
    if len(sys.argv) != 4:
        raise SystemExit(__doc__)
    main(*sys.argv[1:4])
