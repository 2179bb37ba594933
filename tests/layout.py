"""Building and reading OCI image layout directories (image-layout spec v1) in pure Python."""

from __future__ import annotations

import gzip
import hashlib
import io
import json
import os
import tarfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from .oci import OCI_CONFIG, OCI_INDEX, OCI_LAYER, OCI_MANIFEST, canonical, descriptor, sha256

REF_NAME = "org.opencontainers.image.ref.name"


def tar_gz(files: dict[str, bytes]) -> tuple[bytes, str]:
    """A reproducible gzip-compressed tar holding ``files``; returns (blob, diff_id)."""
    raw = io.BytesIO()
    with tarfile.open(fileobj=raw, mode="w", format=tarfile.PAX_FORMAT) as tar:
        for name, data in sorted(files.items()):
            info = tarfile.TarInfo(name)
            info.size = len(data)
            info.mode = 0o644
            info.mtime = 0
            tar.addfile(info, io.BytesIO(data))
    uncompressed = raw.getvalue()
    return gzip.compress(uncompressed, mtime=0), sha256(uncompressed)


@dataclass
class LayoutImage:
    """An image manifest with its config and gzip tar layers, all as bytes."""

    config: bytes
    layers: list[bytes]
    manifest: bytes

    @property
    def digest(self) -> str:
        return sha256(self.manifest)

    @property
    def blobs(self) -> list[bytes]:
        return [self.config, *self.layers]

    @property
    def layer_digests(self) -> list[str]:
        return [sha256(layer) for layer in self.layers]


def make_image(architecture: str = "amd64", layers: int = 2) -> LayoutImage:
    """An OCI image whose layers are real tar.gz files with a nonce, so every call is unique."""
    nonce = os.urandom(8).hex()
    blobs, diff_ids = [], []
    for i in range(layers):
        blob, diff_id = tar_gz(
            {
                f"layer{i}/hello.txt": f"hello from layer {i} on {architecture}\n".encode(),
                f"layer{i}/nonce": nonce.encode(),
            }
        )
        blobs.append(blob)
        diff_ids.append(diff_id)
    config = canonical(
        {
            "architecture": architecture,
            "os": "linux",
            "config": {"Cmd": ["/bin/true"]},
            "rootfs": {"type": "layers", "diff_ids": diff_ids},
            "history": [{"created_by": f"tests/layout.py layer {i}"} for i in range(layers)],
        }
    )
    manifest = canonical(
        {
            "schemaVersion": 2,
            "mediaType": OCI_MANIFEST,
            "config": descriptor(OCI_CONFIG, config),
            "layers": [descriptor(OCI_LAYER, blob) for blob in blobs],
        }
    )
    return LayoutImage(config, blobs, manifest)


@dataclass
class LayoutIndex:
    """A multi-platform OCI image index and its child images."""

    children: dict[str, LayoutImage]
    manifest: bytes

    @property
    def digest(self) -> str:
        return sha256(self.manifest)


def make_index(architectures: tuple[str, ...] = ("amd64", "arm64")) -> LayoutIndex:
    children = {arch: make_image(arch) for arch in architectures}
    manifest = canonical(
        {
            "schemaVersion": 2,
            "mediaType": OCI_INDEX,
            "manifests": [
                descriptor(OCI_MANIFEST, child.manifest, platform={"architecture": arch, "os": "linux"})
                for arch, child in children.items()
            ],
        }
    )
    return LayoutIndex(children, manifest)


@dataclass
class Layout:
    """An OCI image layout directory being written: blobs/sha256/<hex>, oci-layout, index.json."""

    path: Path
    refs: list[dict[str, Any]] = field(default_factory=list)

    def __post_init__(self) -> None:
        (self.path / "blobs" / "sha256").mkdir(parents=True, exist_ok=True)
        (self.path / "oci-layout").write_text(json.dumps({"imageLayoutVersion": "1.0.0"}))
        self._write_index()

    def add_blob(self, data: bytes) -> str:
        digest = sha256(data)
        (self.path / "blobs" / "sha256" / digest.split(":", 1)[1]).write_bytes(data)
        return digest

    def add_image(self, image: LayoutImage, tag: str | None = None) -> str:
        for blob in image.blobs:
            self.add_blob(blob)
        self.add_blob(image.manifest)
        if tag is not None:
            self._tag(OCI_MANIFEST, image.manifest, tag)
        return image.digest

    def add_index(self, index: LayoutIndex, tag: str) -> str:
        for child in index.children.values():
            self.add_image(child)
        self.add_blob(index.manifest)
        self._tag(OCI_INDEX, index.manifest, tag)
        return index.digest

    def _tag(self, media_type: str, manifest: bytes, tag: str) -> None:
        self.refs = [ref for ref in self.refs if ref["annotations"][REF_NAME] != tag]
        self.refs.append(descriptor(media_type, manifest, annotations={REF_NAME: tag}))
        self._write_index()

    def _write_index(self) -> None:
        document = {"schemaVersion": 2, "mediaType": OCI_INDEX, "manifests": self.refs}
        (self.path / "index.json").write_text(json.dumps(document, indent=2))


# -- reading a layout that skopeo wrote --------------------------------------------------------


def read_blob(layout: Path, digest: str) -> bytes:
    """A blob of the layout, checked against its digest."""
    algorithm, hexdigest = digest.split(":", 1)
    data = (layout / "blobs" / algorithm / hexdigest).read_bytes()
    assert hashlib.new(algorithm, data).hexdigest() == hexdigest, f"blob {digest} is corrupt"
    return data


def ref_descriptor(layout: Path, tag: str) -> dict[str, Any]:
    """The index.json descriptor that carries the ref-name annotation ``tag``."""
    assert json.loads((layout / "oci-layout").read_text())["imageLayoutVersion"] == "1.0.0"
    index = json.loads((layout / "index.json").read_text())
    found = [d for d in index["manifests"] if d.get("annotations", {}).get(REF_NAME) == tag]
    assert len(found) == 1, f"{tag!r} in {layout}/index.json: {index}"
    return found[0]


def blob_digests(layout: Path) -> set[str]:
    return {f"sha256:{p.name}" for p in (layout / "blobs" / "sha256").iterdir()}
