"""The mesh pieces around the sidecar: stand-in upstream LLMs, Envoy, and `make mesh-demo`."""
