"""The locustfile ``quantplug loadtest`` runs: Triton over gRPC with exact timings.

``loadtests/triton_grpc.py`` is the same user for people who run locust themselves.
"""

from quantplug.loadtest.grpc_user import TritonGrpcUser

__all__ = ["TritonGrpcUser"]
