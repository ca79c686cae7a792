"""The generated protobuf and gRPC code, imported here and nowhere else in the package.

Generated modules live under ``sidecar/_gen`` (``make proto``) and are never
edited; going through this one module keeps their import path in one place
and lets the import-linter contracts see who depends on the wire format.
"""

from uniroute.v1 import registry_pb2, registry_pb2_grpc, router_pb2, router_pb2_grpc

__all__ = ["registry_pb2", "registry_pb2_grpc", "router_pb2", "router_pb2_grpc"]
