"""`make oci`: the filter as an OCI image without a Docker daemon, in the format Istio's agent
pulls (one layer of media type application/vnd.module.wasm.content.layer.v1+wasm), as an OCI
layout directory and a tarball; then the Istio manifests with the image digest pinned.

    python scripts/oci.py <module.wasm> <out-dir> <tag>
"""

import hashlib
import io
import json
import sys
import tarfile
from pathlib import Path

LAYER_TYPE = "application/vnd.module.wasm.content.layer.v1+wasm"
CONFIG_TYPE = "application/vnd.module.wasm.config.v1+json"
MANIFEST_TYPE = "application/vnd.oci.image.manifest.v1+json"
ROOT = Path(__file__).resolve().parents[1]


def blob(layout: Path, data: bytes) -> str:
    digest = hashlib.sha256(data).hexdigest()
    path = layout / "blobs" / "sha256" / digest
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data)
    return digest


def canonical(value) -> bytes:
    return json.dumps(value, sort_keys=True, separators=(",", ":")).encode()


def build(wasm: Path, out: Path, tag: str) -> dict:
    layout = out / "layout"
    module = wasm.read_bytes()
    layer = blob(layout, module)
    config = canonical({"created": "1970-01-01T00:00:00Z", "author": "mcp-mesh-auth",
                        "platform": "proxy-wasm", "architecture": "wasm32", "os": "wasip1"})
    config_digest = blob(layout, config)
    manifest = canonical({
        "schemaVersion": 2,
        "mediaType": MANIFEST_TYPE,
        "config": {"mediaType": CONFIG_TYPE, "digest": f"sha256:{config_digest}", "size": len(config)},
        "layers": [{"mediaType": LAYER_TYPE, "digest": f"sha256:{layer}", "size": len(module),
                    "annotations": {"org.opencontainers.image.title": "plugin.wasm"}}],
    })
    manifest_digest = blob(layout, manifest)
    (layout / "oci-layout").write_text(json.dumps({"imageLayoutVersion": "1.0.0"}))
    (layout / "index.json").write_bytes(canonical({
        "schemaVersion": 2,
        "manifests": [{"mediaType": MANIFEST_TYPE, "digest": f"sha256:{manifest_digest}", "size": len(manifest),
                       "annotations": {"org.opencontainers.image.ref.name": tag}}],
    }))
    tarball = out / "mcp-mesh-auth-oci.tar"
    with tarfile.open(tarball, "w") as tar:  # deterministic: sorted names, no times, no owners
        for path in sorted(layout.rglob("*")):
            if path.is_file():
                info = tarfile.TarInfo(str(path.relative_to(layout)))
                data = path.read_bytes()
                info.size, info.mtime, info.mode = len(data), 0, 0o644
                tar.addfile(info, io.BytesIO(data))
    return {"layer": layer, "manifest": manifest_digest, "tarball": str(tarball), "layout": str(layout)}


def render_manifests(out: Path, manifest_digest: str) -> list[Path]:
    rendered = []
    target = out.parent / "istio"
    target.mkdir(parents=True, exist_ok=True)
    for template in sorted((ROOT / "istio").glob("*.yaml")):
        path = target / template.name
        path.write_text(template.read_text().replace("${WASM_SHA256}", manifest_digest))
        rendered.append(path)
    return rendered


def main(wasm, out, tag):
    out = Path(out)
    result = build(Path(wasm), out, tag)
    rendered = render_manifests(out, result["manifest"])
    print(f"OCI layout:   {result['layout']}")
    print(f"OCI tarball:  {result['tarball']}")
    print(f"module layer: sha256:{result['layer']}")
    print(f"image digest: sha256:{result['manifest']}   (pinned in {rendered[0].parent}/*.yaml)")
    print("push it, e.g.:")
    print(f"  oras cp --from-oci-layout {result['layout']}:{tag} ghcr.io/<you>/mcp-mesh-auth:{tag}")
    print(f"  skopeo copy oci:{result['layout']}:{tag} docker://ghcr.io/<you>/mcp-mesh-auth:{tag}")
    print(f"  crane push {result['layout']} ghcr.io/<you>/mcp-mesh-auth:{tag}")


if __name__ == "__main__":
    main(*sys.argv[1:4])
