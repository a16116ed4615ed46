"""Static checks of the deployment files (compose, Dockerfile, Kubernetes manifests, docs)."""
