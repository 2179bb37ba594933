"""Building OCI content in tests: blobs, image manifests, indexes, and pushing them over HTTP."""

from __future__ import annotations

import hashlib
import json
import os
from dataclasses import dataclass, field
from typing import Any

import httpx

OCI_MANIFEST = "application/vnd.oci.image.manifest.v1+json"
OCI_INDEX = "application/vnd.oci.image.index.v1+json"
OCI_CONFIG = "application/vnd.oci.image.config.v1+json"
OCI_LAYER = "application/vnd.oci.image.layer.v1.tar+gzip"
DOCKER_MANIFEST = "application/vnd.docker.distribution.manifest.v2+json"
DOCKER_LIST = "application/vnd.docker.distribution.manifest.list.v2+json"
DOCKER_CONFIG = "application/vnd.docker.container.image.v1+json"
DOCKER_LAYER = "application/vnd.docker.image.rootfs.diff.tar.gzip"


def sha256(data: bytes) -> str:
    return "sha256:" + hashlib.sha256(data).hexdigest()


def canonical(document: dict[str, Any]) -> bytes:
    return json.dumps(document, separators=(",", ":"), sort_keys=True).encode()


def descriptor(media_type: str, data: bytes, **extra: Any) -> dict[str, Any]:
    return {"mediaType": media_type, "digest": sha256(data), "size": len(data), **extra}


@dataclass
class Image:
    config: bytes
    layers: list[bytes]
    media_type: str = OCI_MANIFEST
    subject: dict[str, Any] | None = None
    artifact_type: str | None = None
    annotations: dict[str, str] = field(default_factory=dict)

    @classmethod
    def random(cls, layers: int = 2, size: int = 1024, **kwargs: Any) -> Image:
        config = canonical({"architecture": "amd64", "os": "linux", "nonce": os.urandom(8).hex()})
        return cls(config, [os.urandom(size) for _ in range(layers)], **kwargs)

    @property
    def manifest(self) -> bytes:
        docker = self.media_type == DOCKER_MANIFEST
        document: dict[str, Any] = {
            "schemaVersion": 2,
            "mediaType": self.media_type,
            "config": descriptor(DOCKER_CONFIG if docker else OCI_CONFIG, self.config),
            "layers": [descriptor(DOCKER_LAYER if docker else OCI_LAYER, layer) for layer in self.layers],
        }
        if self.subject:
            document["subject"] = self.subject
        if self.artifact_type:
            document["artifactType"] = self.artifact_type
        if self.annotations:
            document["annotations"] = self.annotations
        return canonical(document)

    @property
    def digest(self) -> str:
        return sha256(self.manifest)

    @property
    def blobs(self) -> list[bytes]:
        return [self.config, *self.layers]


def index(children: list[Image], media_type: str = OCI_INDEX) -> bytes:
    platforms = [("amd64", "linux"), ("arm64", "linux"), ("s390x", "linux"), ("ppc64le", "linux")]
    manifests = [
        descriptor(child.media_type, child.manifest, platform={"architecture": arch, "os": os_})
        for child, (arch, os_) in zip(children, platforms, strict=False)
    ]
    return canonical({"schemaVersion": 2, "mediaType": media_type, "manifests": manifests})


def push_blob(client: httpx.Client, repo: str, data: bytes) -> str:
    digest = sha256(data)
    response = client.post(f"/v2/{repo}/blobs/uploads/", params={"digest": digest}, content=data)
    assert response.status_code == 201, response.text
    return digest


def push_manifest(
    client: httpx.Client, repo: str, reference: str, payload: bytes, media_type: str
) -> httpx.Response:
    response = client.put(
        f"/v2/{repo}/manifests/{reference}", content=payload, headers={"Content-Type": media_type}
    )
    assert response.status_code == 201, response.text
    return response


def push_image(client: httpx.Client, repo: str, image: Image, tag: str | None = None) -> str:
    for blob in image.blobs:
        push_blob(client, repo, blob)
    push_manifest(client, repo, tag or image.digest, image.manifest, image.media_type)
    return image.digest


def error_codes(response: httpx.Response) -> list[str]:
    return [error["code"] for error in response.json()["errors"]]
