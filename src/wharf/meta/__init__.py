"""The metadata store: repositories, blobs, manifests, tags, uploads and events."""
