"""Bearer tokens, TLS, mutual TLS and Unix sockets, over real sockets.

Servers run in-process through ``make_sidecar`` (a real gRPC server on a real
port), plus two `sidecar serve` subprocesses for the command line. Every
certificate is made here with `cryptography`: a CA, a server certificate for
127.0.0.1 and localhost, a client certificate from the same CA, and an
unrelated CA with a client certificate of its own.
"""

from __future__ import annotations

import contextlib
import datetime
import ipaddress
import logging
import os
import socket
import subprocess
import sys
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

import grpc
import pytest
from _helpers import CODE_PROMPT, topic_results, two_topic_prompts
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID
from grpc_health.v1 import health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection_pb2, reflection_pb2_grpc
from uniroute.v1 import registry_pb2, registry_pb2_grpc, router_pb2, router_pb2_grpc

from sidecar import ArtifactError, Embedder, InvalidArgument, ServerConfig
from sidecar._auth import (
    METHOD_LEVELS,
    Access,
    access_level,
    load_token,
    load_tokens,
    tokens_from_env,
)
from sidecar._clustering import fit_clustering
from sidecar._proto import ext_proc_pb2
from sidecar._readiness import free_port, wait_serving, wait_until
from sidecar._wire import clustering_spec

SIDECAR = [sys.executable, "-m", "sidecar._cli"]
WRITE_1 = "write-token-one-6f1c0d9e2a7b4c35"
WRITE_2 = "write-token-two-93ab51e07c2d4f68"
READ_1 = "read-token-one-0b7e4c2a9d1f5e36"
WRONG = "not-a-configured-token-5d2e8a1c"
ALL_TOKENS = (WRITE_1, WRITE_2, READ_1, WRONG)
UNAUTHENTICATED = grpc.StatusCode.UNAUTHENTICATED
PERMISSION_DENIED = grpc.StatusCode.PERMISSION_DENIED
UNAVAILABLE = grpc.StatusCode.UNAVAILABLE
T = TypeVar("T")


# ---------------------------------------------------------------- certificates


@dataclass(frozen=True)
class Pki:
    ca: Path
    server_cert: Path
    server_key: Path
    client_cert: Path
    client_key: Path
    other_ca: Path
    rogue_cert: Path  # a client certificate signed by other_ca
    rogue_key: Path
    encrypted_key: Path  # server_key, passphrase-protected

    def read(self, path: Path) -> bytes:
        return path.read_bytes()


def _name(common_name: str) -> x509.Name:
    return x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common_name)])


def _builder(subject: str, issuer: x509.Name, public_key: Any) -> x509.CertificateBuilder:
    now = datetime.datetime.now(datetime.UTC)
    return (
        x509.CertificateBuilder()
        .subject_name(_name(subject))
        .issuer_name(issuer)
        .public_key(public_key)
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(hours=1))
        .not_valid_after(now + datetime.timedelta(days=2))
    )


def _ca(common_name: str) -> tuple[ec.EllipticCurvePrivateKey, x509.Certificate]:
    key = ec.generate_private_key(ec.SECP256R1())
    cert = (
        _builder(common_name, _name(common_name), key.public_key())
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .add_extension(
            x509.KeyUsage(
                digital_signature=True,
                content_commitment=False,
                key_encipherment=False,
                data_encipherment=False,
                key_agreement=False,
                key_cert_sign=True,
                crl_sign=True,
                encipher_only=False,
                decipher_only=False,
            ),
            critical=True,
        )
        .sign(key, hashes.SHA256())
    )
    return key, cert


def _leaf(
    common_name: str,
    issuer: tuple[ec.EllipticCurvePrivateKey, x509.Certificate],
    *,
    server: bool,
) -> tuple[ec.EllipticCurvePrivateKey, x509.Certificate]:
    issuer_key, issuer_cert = issuer
    key = ec.generate_private_key(ec.SECP256R1())
    usage = ExtendedKeyUsageOID.SERVER_AUTH if server else ExtendedKeyUsageOID.CLIENT_AUTH
    builder = (
        _builder(common_name, issuer_cert.subject, key.public_key())
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(x509.ExtendedKeyUsage([usage]), critical=False)
    )
    if server:
        builder = builder.add_extension(
            x509.SubjectAlternativeName(
                [x509.DNSName("localhost"), x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]
            ),
            critical=False,
        )
    return key, builder.sign(issuer_key, hashes.SHA256())


def _write_key(key: ec.EllipticCurvePrivateKey, path: Path, passphrase: bytes = b"") -> Path:
    encryption: serialization.KeySerializationEncryption = (
        serialization.BestAvailableEncryption(passphrase)
        if passphrase
        else serialization.NoEncryption()
    )
    path.write_bytes(
        key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, encryption)
    )
    return path


def _write_cert(cert: x509.Certificate, path: Path) -> Path:
    path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    return path


@pytest.fixture(scope="session")
def pki(tmp_path_factory: pytest.TempPathFactory) -> Pki:
    d = tmp_path_factory.mktemp("pki")
    ca = _ca("uniroute test CA")
    other = _ca("unrelated CA")
    server_key, server_cert = _leaf("sidecar", ca, server=True)
    client_key, client_cert = _leaf("follower", ca, server=False)
    rogue_key, rogue_cert = _leaf("rogue", other, server=False)
    return Pki(
        ca=_write_cert(ca[1], d / "ca.crt"),
        server_cert=_write_cert(server_cert, d / "server.crt"),
        server_key=_write_key(server_key, d / "server.key"),
        client_cert=_write_cert(client_cert, d / "client.crt"),
        client_key=_write_key(client_key, d / "client.key"),
        other_ca=_write_cert(other[1], d / "other-ca.crt"),
        rogue_cert=_write_cert(rogue_cert, d / "rogue.crt"),
        rogue_key=_write_key(rogue_key, d / "rogue.key"),
        encrypted_key=_write_key(server_key, d / "encrypted.key", b"passphrase"),
    )


def tls(
    pki: Pki, *, ca: Path | None = None, cert: Path | None = None, key: Path | None = None
) -> grpc.ChannelCredentials:
    return grpc.ssl_channel_credentials(
        root_certificates=(ca or pki.ca).read_bytes(),
        private_key=key.read_bytes() if key else None,
        certificate_chain=cert.read_bytes() if cert else None,
    )


# ---------------------------------------------------------------------- helpers


class Stubs:
    def __init__(self, channel: grpc.Channel) -> None:
        self.channel = channel
        self.router = router_pb2_grpc.RouterStub(channel)
        self.registry = registry_pb2_grpc.RegistryStub(channel)
        self.health = health_pb2_grpc.HealthStub(channel)


@pytest.fixture
def open_channel() -> Iterator[Callable[..., Stubs]]:
    """Channels to a target, plaintext or TLS; all closed at teardown."""
    channels: list[grpc.Channel] = []

    def make(target: str | int, credentials: grpc.ChannelCredentials | None = None) -> Stubs:
        address = f"127.0.0.1:{target}" if isinstance(target, int) else target
        channel = (
            grpc.secure_channel(address, credentials)
            if credentials is not None
            else grpc.insecure_channel(address)
        )
        channels.append(channel)
        return Stubs(channel)

    yield make
    for channel in channels:
        channel.close()


def bearer(token: str) -> list[tuple[str, str]]:
    return [("authorization", f"Bearer {token}")]


def expect_code(code: grpc.StatusCode, call: Callable[..., Any], *args: Any, **kw: Any) -> str:
    """call(*args, **kw) must fail with code; returns the status message."""
    kw.setdefault("timeout", 10)
    with pytest.raises(grpc.RpcError) as info:
        call(*args, **kw)
    error: Any = info.value
    assert error.code() == code, f"{error.code()}: {error.details()}"
    return str(error.details())


def register_request(name: str, good_topic: str = "code") -> registry_pb2.RegisterModelRequest:
    return registry_pb2.RegisterModelRequest(
        name=name,
        cost=1.0,
        results=registry_pb2.ValidationResults(results=topic_results(good_topic)),
    )


def route(stubs: Stubs, **kw: Any) -> router_pb2.RouteResponse:
    kw.setdefault("timeout", 10)
    return stubs.router.Route(router_pb2.RouteRequest(prompt=CODE_PROMPT), **kw)


def first_watch_message(stubs: Stubs, **kw: Any) -> registry_pb2.WatchResponse:
    kw.setdefault("timeout", 10)
    call = stubs.registry.Watch(registry_pb2.WatchRequest(start_revision=0), **kw)
    try:
        return next(iter(call))
    finally:
        call.cancel()


def state(stubs: Stubs, **kw: Any) -> tuple[int, list[str], str]:
    """Revision, model names and clustering version: what a refused write must not change."""
    kw.setdefault("timeout", 10)
    status = stubs.registry.GetStatus(registry_pb2.GetStatusRequest(), **kw)
    models = stubs.registry.ListModels(registry_pb2.ListModelsRequest(), **kw)
    clustering = stubs.registry.GetClustering(registry_pb2.GetClusteringRequest(), **kw)
    return status.revision, [m.name for m in models.models], clustering.version


def get_status(stubs: Stubs) -> registry_pb2.ServerStatus:
    return stubs.registry.GetStatus(registry_pb2.GetStatusRequest(), timeout=10)


def failing_follower(stubs: Stubs, needle: str) -> registry_pb2.ServerStatus:
    """Waits until a follower reports an error containing needle; returns its status."""

    def failed() -> registry_pb2.ServerStatus | None:
        status = get_status(stubs)
        return status if needle in status.last_error else None

    status = wait_until(failed)
    assert status is not None
    return status


@pytest.fixture(scope="module")
def three_cluster_spec(embedder: Embedder) -> registry_pb2.ClusteringSpec:
    """A different clustering (K=3) to activate, so a refused activation would show."""
    train, val = two_topic_prompts()
    clustering = fit_clustering(
        embedder.embed_batch(train).vectors,
        [i for i, _, _ in val],
        embedder.embed_batch([p for _, p, _ in val]).vectors,
        k=3,
        embedder_fingerprint=embedder.fingerprint,
        seed=1,
    )
    return clustering_spec(clustering)


# ------------------------------------------------------------------ method map


def test_access_levels_come_from_the_service_descriptors() -> None:
    router = router_pb2.DESCRIPTOR.services_by_name["Router"]
    registry = registry_pb2.DESCRIPTOR.services_by_name["Registry"]
    ext_proc = ext_proc_pb2.DESCRIPTOR.services_by_name["ExternalProcessor"]
    services = (router, registry, ext_proc)
    every = {f"/{s.full_name}/{m.name}" for s in services for m in s.methods}
    assert set(METHOD_LEVELS) == every
    assert access_level(f"/{ext_proc.full_name}/Process") is Access.READ  # Envoy's stream
    writes = {m for m, level in METHOD_LEVELS.items() if level is Access.WRITE}
    assert writes == {
        f"/{registry.full_name}/{n}"
        for n in ("RegisterModel", "DeregisterModel", "ActivateClustering")
    }
    assert access_level(f"/{router.full_name}/Route") is Access.READ
    assert access_level(f"/{registry.full_name}/Watch") is Access.READ
    assert access_level("/grpc.health.v1.Health/Check") is Access.OPEN
    assert access_level("/grpc.reflection.v1alpha.ServerReflection/ServerReflectionInfo") is (
        Access.OPEN
    )
    assert access_level("/uniroute.v1.Admin/DropEverything") is Access.WRITE  # fail closed


# ---------------------------------------------------------------- bearer tokens


def test_writes_need_a_write_token_and_refused_writes_change_nothing(
    make_sidecar, topic_artifact, open_channel, three_cluster_spec
):
    sidecar = make_sidecar(artifact_dir=topic_artifact, write_tokens=(WRITE_1, WRITE_2))
    stubs = open_channel(sidecar.port)
    assert (
        stubs.registry.RegisterModel(
            register_request("chef", "cook"), timeout=10, metadata=bearer(WRITE_1)
        ).revision
        == 2
    )
    before = state(stubs)
    writes = [
        (stubs.registry.RegisterModel, register_request("coder")),
        (stubs.registry.DeregisterModel, registry_pb2.DeregisterModelRequest(name="chef")),
        (
            stubs.registry.ActivateClustering,
            registry_pb2.ActivateClusteringRequest(clustering=three_cluster_spec),
        ),
    ]
    for call, request in writes:
        missing = expect_code(UNAUTHENTICATED, call, request)
        assert "needs `authorization: Bearer <token>`" in missing
        assert "--write-tokens-file" in missing
        not_bearer = [("authorization", f"Basic {WRITE_1}")]
        expect_code(UNAUTHENTICATED, call, request, metadata=not_bearer)
        expect_code(UNAUTHENTICATED, call, request, metadata=[("authorization", "Bearer ")])
        wrong = expect_code(PERMISSION_DENIED, call, request, metadata=bearer(WRONG))
        assert WRONG not in wrong
        prefix = expect_code(PERMISSION_DENIED, call, request, metadata=bearer(WRITE_1[:-1]))
        assert WRITE_1[:-1] not in prefix
    assert state(stubs) == before

    # Either rotated token works, for every write.
    added = stubs.registry.RegisterModel(
        register_request("coder"), timeout=10, metadata=bearer(WRITE_2)
    )
    assert added.revision == before[0] + 1
    removed = stubs.registry.DeregisterModel(
        registry_pb2.DeregisterModelRequest(name="chef"),
        timeout=10,
        metadata=[("authorization", f"bearer {WRITE_1}")],  # the scheme is case-insensitive
    )
    assert removed.revision == added.revision + 1
    activated = stubs.registry.ActivateClustering(
        registry_pb2.ActivateClusteringRequest(clustering=three_cluster_spec),
        timeout=10,
        metadata=bearer(WRITE_2),
    )
    assert activated.k == 3
    assert state(stubs) == (removed.revision + 1, ["coder"], three_cluster_spec.version)


def test_reads_are_open_by_default(make_sidecar, topic_artifact, open_channel):
    sidecar = make_sidecar(artifact_dir=topic_artifact, write_tokens=(WRITE_1,))
    stubs = open_channel(sidecar.port)
    stubs.registry.RegisterModel(register_request("coder"), timeout=10, metadata=bearer(WRITE_1))
    assert route(stubs).model == "coder"
    assert state(stubs)[1] == ["coder"]
    assert stubs.registry.GetModel(registry_pb2.GetModelRequest(name="coder"), timeout=10).name
    assert first_watch_message(stubs).WhichOneof("payload") == "snapshot"
    assert route(stubs, metadata=bearer(WRONG)).model == "coder"  # nothing checks it


def test_a_read_token_set_locks_reads_but_not_health_or_reflection(
    make_sidecar, topic_artifact, open_channel
):
    sidecar = make_sidecar(
        artifact_dir=topic_artifact, write_tokens=(WRITE_1,), read_tokens=(READ_1,)
    )
    stubs = open_channel(sidecar.port)
    stubs.registry.RegisterModel(register_request("coder"), timeout=10, metadata=bearer(WRITE_1))

    message = expect_code(UNAUTHENTICATED, route, stubs)
    assert "read or write token" in message and "--read-tokens-file" in message
    expect_code(PERMISSION_DENIED, route, stubs, metadata=bearer(WRONG))
    assert route(stubs, metadata=bearer(READ_1)).model == "coder"
    assert route(stubs, metadata=bearer(WRITE_1)).model == "coder"
    batch = router_pb2.RouteBatchRequest(requests=[router_pb2.RouteRequest(prompt=CODE_PROMPT)])
    expect_code(UNAUTHENTICATED, stubs.router.RouteBatch, batch)
    assert stubs.router.RouteBatch(batch, timeout=10, metadata=bearer(READ_1)).responses

    expect_code(UNAUTHENTICATED, state, stubs)
    assert state(stubs, metadata=bearer(READ_1))[1] == ["coder"]
    expect_code(UNAUTHENTICATED, first_watch_message, stubs)
    assert first_watch_message(stubs, metadata=bearer(READ_1)).snapshot.models[0].name == "coder"

    # A read token does not unlock writes.
    expect_code(
        PERMISSION_DENIED,
        stubs.registry.RegisterModel,
        register_request("chef", "cook"),
        metadata=bearer(READ_1),
    )
    assert state(stubs, metadata=bearer(READ_1))[1] == ["coder"]

    # Health and reflection stay open.
    health = stubs.health.Check(health_pb2.HealthCheckRequest(), timeout=10)
    assert health.status == health_pb2.HealthCheckResponse.SERVING
    reflection = reflection_pb2_grpc.ServerReflectionStub(stubs.channel)
    replies = reflection.ServerReflectionInfo(
        iter([reflection_pb2.ServerReflectionRequest(list_services="")]), timeout=10
    )
    names = {s.name for s in next(iter(replies)).list_services_response.service}
    assert "uniroute.v1.Router" in names


def test_a_follower_sends_its_leader_token(make_sidecar, topic_artifact, open_channel, tmp_path):
    leader = make_sidecar(
        artifact_dir=topic_artifact,
        db_path=tmp_path / "leader.db",
        write_tokens=(WRITE_1,),
        read_tokens=(READ_1,),
        progress_interval=0.2,
    )
    address = f"127.0.0.1:{leader.port}"
    anonymous = make_sidecar(follow=address, db_path=tmp_path / "anonymous.db")
    wrong = make_sidecar(follow=address, db_path=tmp_path / "wrong.db", leader_token=WRONG)
    good = make_sidecar(follow=address, db_path=tmp_path / "good.db", leader_token=READ_1)
    added = open_channel(leader.port).registry.RegisterModel(
        register_request("coder"), timeout=10, metadata=bearer(WRITE_1)
    )

    good_stubs = open_channel(good.port)
    wait_until(lambda: route(good_stubs).revision == added.revision)
    assert get_status(good_stubs).connected
    for follower, code in ((anonymous, "UNAUTHENTICATED"), (wrong, "PERMISSION_DENIED")):
        status = failing_follower(open_channel(follower.port), code)
        assert not status.connected
        assert status.revision == 0 and status.applied_snapshot_count == 0


def test_token_values_never_reach_the_logs(
    make_sidecar, topic_artifact, open_channel, tmp_path, caplog
):
    caplog.set_level(logging.DEBUG)
    leader = make_sidecar(
        artifact_dir=topic_artifact,
        db_path=tmp_path / "leader.db",
        write_tokens=(WRITE_1, WRITE_2),
        read_tokens=(READ_1,),
        progress_interval=0.2,
    )
    stubs = open_channel(leader.port)
    for token in (WRONG, READ_1, WRITE_1, WRITE_2):
        with contextlib.suppress(grpc.RpcError):
            stubs.registry.RegisterModel(
                register_request("coder"), timeout=10, metadata=bearer(token)
            )
        with contextlib.suppress(grpc.RpcError):
            route(stubs, metadata=bearer(token))
    with contextlib.suppress(grpc.RpcError):
        route(stubs, metadata=[("authorization", WRONG)])
    address = f"127.0.0.1:{leader.port}"
    wrong = make_sidecar(follow=address, db_path=tmp_path / "wrong.db", leader_token=WRONG)
    good = make_sidecar(follow=address, db_path=tmp_path / "good.db", leader_token=READ_1)
    good_stubs = open_channel(good.port)
    wait_until(lambda: get_status(good_stubs).revision == 2)
    failing_follower(open_channel(wrong.port), "PERMISSION_DENIED")
    with pytest.raises(InvalidArgument) as short:
        make_sidecar(db_path=tmp_path / "x.db", write_tokens=("tooshort-secret",))

    text = caplog.text
    assert "refused /uniroute.v1.Registry/RegisterModel" in text  # the logs were captured
    assert "PERMISSION_DENIED" in text
    for token in (*ALL_TOKENS, "tooshort-secret"):
        assert token not in text
        assert token not in repr(ServerConfig(write_tokens=(token,), leader_token=token))
    assert "tooshort-secret" not in str(short.value)


@pytest.mark.parametrize(
    ("options", "expected"),
    [
        ({"write_tokens": ("",)}, "empty token"),
        ({"write_tokens": ("   ",)}, "empty token"),
        ({"write_tokens": (WRITE_1, "short")}, "at least 16"),
        ({"write_tokens": ("has a space inside it 0123",)}, "printable ASCII"),
        ({"write_tokens": (WRITE_1,), "read_tokens": ("r" * 15,)}, "at least 16"),
        ({"read_tokens": (READ_1,)}, "no write tokens"),
    ],
)
def test_unusable_tokens_stop_start_up(make_sidecar, tmp_path, options, expected):
    with pytest.raises(InvalidArgument, match=expected):
        make_sidecar(db_path=tmp_path / "never.db", **options)
    assert not (tmp_path / "never.db").exists()  # refused before anything was opened


def test_tokens_come_from_files_and_the_environment(tmp_path):
    good = tmp_path / "tokens"
    good.write_text(
        f"# rotated 2026-11\n\n  {WRITE_1}  \n# old one below, remove soon\n{WRITE_2}\n"
    )
    assert load_tokens(good, "UNIROUTE_TEST_TOKENS", "--write-tokens-file", {}) == (
        WRITE_1,
        WRITE_2,
    )
    env = {"UNIROUTE_TEST_TOKENS": f"{WRITE_2}, {READ_1}"}
    assert load_tokens(good, "UNIROUTE_TEST_TOKENS", "--f", env) == (WRITE_1, WRITE_2, READ_1)
    assert load_tokens(None, "UNIROUTE_TEST_TOKENS", "--f", {}) == ()
    for value in ("", " ", f"{WRITE_1},,{WRITE_2}", f"{WRITE_1},"):
        with pytest.raises(InvalidArgument, match="empty token"):
            tokens_from_env("UNIROUTE_TEST_TOKENS", {"UNIROUTE_TEST_TOKENS": value})

    short = tmp_path / "short"
    short.write_text(f"{WRITE_1}\nshort-secret\n")
    with pytest.raises(InvalidArgument, match="line 2") as info:
        load_tokens(short, "UNIROUTE_TEST_TOKENS", "--write-tokens-file", {})
    assert "short-secret" not in str(info.value)
    comments = tmp_path / "comments"
    comments.write_text("# nothing yet\n\n")
    with pytest.raises(InvalidArgument, match="no tokens"):
        load_tokens(comments, "X", "--write-tokens-file", {})
    with pytest.raises(ArtifactError, match="cannot read"):
        load_tokens(tmp_path / "missing", "X", "--write-tokens-file", {})

    assert load_token(None, "UNIROUTE_TEST_TOKEN", "--token-file", {}) is None
    assert load_token(None, "T", "--token-file", {"T": READ_1}) == READ_1
    with pytest.raises(InvalidArgument, match="a client sends one"):
        load_token(good, "T", "--token-file", {})


# ------------------------------------------------------------------------- TLS


def test_tls_clients_must_trust_the_servers_ca(make_sidecar, topic_artifact, open_channel, pki):
    sidecar = make_sidecar(
        artifact_dir=topic_artifact, tls_cert=pki.server_cert, tls_key=pki.server_key
    )
    trusted = open_channel(sidecar.port, tls(pki))
    trusted.registry.RegisterModel(register_request("coder"), timeout=10)
    assert route(trusted).model == "coder"
    by_name = open_channel(f"localhost:{sidecar.port}", tls(pki))
    assert route(by_name).model == "coder"

    wrong_ca = open_channel(sidecar.port, tls(pki, ca=pki.other_ca))
    expect_code(UNAVAILABLE, route, wrong_ca)
    plaintext = open_channel(sidecar.port)
    expect_code(UNAVAILABLE, route, plaintext)


def test_mtls_needs_a_client_certificate_from_the_client_ca(
    make_sidecar, topic_artifact, open_channel, pki
):
    sidecar = make_sidecar(
        artifact_dir=topic_artifact,
        tls_cert=pki.server_cert,
        tls_key=pki.server_key,
        tls_client_ca=pki.ca,
    )
    good = open_channel(sidecar.port, tls(pki, cert=pki.client_cert, key=pki.client_key))
    good.registry.RegisterModel(register_request("coder"), timeout=10)
    assert route(good).model == "coder"
    no_cert = open_channel(sidecar.port, tls(pki))
    expect_code(UNAVAILABLE, route, no_cert)
    rogue = open_channel(sidecar.port, tls(pki, cert=pki.rogue_cert, key=pki.rogue_key))
    expect_code(UNAVAILABLE, route, rogue)


def test_followers_need_a_valid_client_certificate_to_watch(
    make_sidecar, topic_artifact, open_channel, pki, tmp_path
):
    leader = make_sidecar(
        artifact_dir=topic_artifact,
        db_path=tmp_path / "leader.db",
        tls_cert=pki.server_cert,
        tls_key=pki.server_key,
        tls_client_ca=pki.ca,
        progress_interval=0.2,
    )
    address = f"localhost:{leader.port}"
    good = make_sidecar(
        follow=address,
        db_path=tmp_path / "good.db",
        leader_ca=pki.ca,
        leader_cert=pki.client_cert,
        leader_key=pki.client_key,
    )
    rogue = make_sidecar(
        follow=address,
        db_path=tmp_path / "rogue.db",
        leader_ca=pki.ca,
        leader_cert=pki.rogue_cert,
        leader_key=pki.rogue_key,
    )
    no_cert = make_sidecar(follow=address, db_path=tmp_path / "nocert.db", leader_ca=pki.ca)
    plaintext = make_sidecar(follow=address, db_path=tmp_path / "plaintext.db")
    leader_stubs = open_channel(leader.port, tls(pki, cert=pki.client_cert, key=pki.client_key))
    added = leader_stubs.registry.RegisterModel(register_request("coder"), timeout=10)

    good_stubs = open_channel(good.port)  # the followers' own listeners are plaintext
    wait_until(lambda: route(good_stubs).revision == added.revision)
    assert get_status(good_stubs).connected
    for follower in (rogue, no_cert, plaintext):
        stubs = open_channel(follower.port)
        status = failing_follower(stubs, "UNAVAILABLE")
        assert not status.connected
        assert status.revision == 0 and status.applied_snapshot_count == 0
        expect_code(grpc.StatusCode.FAILED_PRECONDITION, route, stubs)  # no table, ever
    assert leader.hub is not None and leader.hub.watcher_count == 1


def _garbage(path: Path) -> Path:
    path.write_text("this is not a certificate\n")
    return path


@pytest.mark.parametrize(
    ("options", "error", "expected"),
    [
        ({"tls_cert": "garbage", "tls_key": "server_key"}, ArtifactError, "--tls-cert"),
        ({"tls_cert": "missing", "tls_key": "server_key"}, ArtifactError, "cannot read"),
        ({"tls_cert": "server_cert", "tls_key": "garbage"}, ArtifactError, "no PEM private key"),
        ({"tls_cert": "server_cert", "tls_key": "client_key"}, ArtifactError, "does not belong"),
        ({"tls_cert": "server_cert", "tls_key": "encrypted_key"}, ArtifactError, "encrypted"),
        ({"tls_cert": "server_key", "tls_key": "server_key"}, ArtifactError, "no PEM certificate"),
        ({"tls_cert": "server_cert"}, InvalidArgument, "--tls-key"),
        ({"tls_client_ca": "ca"}, InvalidArgument, "--tls-cert"),
        (
            {"tls_cert": "server_cert", "tls_key": "server_key", "tls_client_ca": "garbage"},
            ArtifactError,
            "--tls-client-ca",
        ),
        ({"follow": "x:1", "leader_ca": "garbage"}, ArtifactError, "--leader-ca"),
        (
            {"follow": "x:1", "leader_ca": "ca", "leader_cert": "client_cert"},
            InvalidArgument,
            "--leader-key",
        ),
        ({"leader_ca": "ca"}, InvalidArgument, "--follow"),
    ],
)
def test_unusable_pem_files_stop_start_up(make_sidecar, pki, tmp_path, options, error, expected):
    files = {
        "garbage": _garbage(tmp_path / "garbage.pem"),
        "missing": tmp_path / "missing.pem",
        **{name: getattr(pki, name) for name in Pki.__dataclass_fields__},
    }
    config: dict[str, Any] = {
        key: value if key == "follow" else files[value] for key, value in options.items()
    }
    with pytest.raises(error, match=expected):
        make_sidecar(db_path=tmp_path / "never.db", **config)
    assert not (tmp_path / "never.db").exists()


# ------------------------------------------------------------------ unix socket


def test_route_over_a_unix_socket(make_sidecar, topic_artifact, open_channel, tmp_path):
    path = tmp_path / "uniroute.sock"
    assert len(str(path)) < 100, "unix socket paths are limited to about 104 bytes"
    stale = socket.socket(socket.AF_UNIX)
    stale.bind(str(path))  # a crashed run's socket file: serve() must still bind
    stale.close()
    sidecar = make_sidecar(
        artifact_dir=topic_artifact, listen=f"unix://{path}", write_tokens=(WRITE_1,)
    )
    stubs = open_channel(f"unix://{path}")
    stubs.registry.RegisterModel(register_request("coder"), timeout=10, metadata=bearer(WRITE_1))
    stubs.registry.RegisterModel(
        register_request("chef", "cook"), timeout=10, metadata=bearer(WRITE_1)
    )
    response = route(stubs)
    assert response.model == "coder" and response.revision == 3
    expect_code(UNAUTHENTICATED, stubs.registry.RegisterModel, register_request("x"))
    sidecar.stop(0)
    assert not path.exists()  # gRPC removes its socket file on shutdown


# ------------------------------------------------------------------ subprocesses


def _clean_env(**extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("UNIROUTE_")}
    env.update(extra)
    return env


def test_serve_refuses_a_garbage_pem_without_a_traceback(tmp_path, pki):
    garbage = _garbage(tmp_path / "cert.pem")
    result = subprocess.run(
        [
            *SIDECAR,
            "serve",
            "--listen",
            f"127.0.0.1:{free_port()}",
            "--db",
            str(tmp_path / "x.db"),
            "--tls-cert",
            str(garbage),
            "--tls-key",
            str(pki.server_key),
        ],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
        env=_clean_env(),
    )
    assert result.returncode == 1, result.stderr
    assert f"--tls-cert {garbage}: no PEM certificate" in result.stderr
    assert "Traceback" not in result.stderr
    assert not (tmp_path / "x.db").exists()


@contextlib.contextmanager
def serving_tls(
    log: Path, pki: Pki, *args: str, env: dict[str, str]
) -> Iterator[tuple[str, subprocess.Popen[bytes]]]:
    address = f"127.0.0.1:{free_port()}"
    command = [
        *SIDECAR,
        "serve",
        "--listen",
        address,
        "--tls-cert",
        str(pki.server_cert),
        "--tls-key",
        str(pki.server_key),
        *args,
    ]
    with log.open("wb") as out, subprocess.Popen(command, stdout=out, stderr=out, env=env) as proc:
        try:
            with grpc.secure_channel(address, tls(pki)) as channel:
                wait_serving(channel, process=proc, log=log, name="serve")
            yield address, proc
        finally:
            if proc.poll() is None:
                proc.terminate()
                proc.wait(timeout=30)


def test_serve_with_tokens_from_a_file_and_cli_clients(tmp_path, pki, topic_artifact, topic_files):
    tokens = tmp_path / "write-tokens"
    tokens.write_text(f"# CI and the release bot\n{WRITE_1}\n\n{WRITE_2}\n")
    token_file = tmp_path / "my-token"
    token_file.write_text(WRITE_2 + "\n")
    log = tmp_path / "serve.log"
    env = _clean_env()
    db = tmp_path / "reg.db"
    args = ("--db", str(db), "--artifact", str(topic_artifact), "--write-tokens-file", str(tokens))
    with serving_tls(log, pki, *args, env=env) as (address, _):
        wait_until(lambda: "writes require a bearer token (2 configured)" in log.read_text())

        def cli(*argv: str, **extra: str) -> subprocess.CompletedProcess[str]:
            return subprocess.run(
                [*SIDECAR, argv[0], "--server", address, *argv[1:]],
                capture_output=True,
                text=True,
                timeout=120,
                check=False,
                env=_clean_env(**extra),
            )

        ca = ("--ca", str(pki.ca))
        register = ("--name", "coder", "--cost", "1", "--results", str(topic_files["coder"]))
        refused = cli("register", *ca, *register)
        assert refused.returncode == 1
        assert "UNAUTHENTICATED" in refused.stderr and "--write-tokens-file" in refused.stderr
        assert "Traceback" not in refused.stderr
        wrong = cli("register", *ca, *register, UNIROUTE_TOKEN=WRONG)
        assert wrong.returncode == 1 and "PERMISSION_DENIED" in wrong.stderr

        done = cli("register", *ca, *register, "--token-file", str(token_file))
        assert done.returncode == 0, done.stderr
        assert "registered coder at revision 2" in done.stdout
        routed = cli("route", *ca, "--prompt", CODE_PROMPT)  # reads stay open
        assert routed.returncode == 0 and routed.stdout.startswith("coder")
        listed = cli("models", *ca, "--token-file", str(token_file))
        assert listed.returncode == 0 and listed.stdout.startswith("coder")
        status = cli("status", *ca)
        assert status.returncode == 0 and "leader: revision 2" in status.stdout
        gone = cli("deregister", *ca, "--name", "coder", UNIROUTE_TOKEN=WRITE_1)
        assert gone.returncode == 0, gone.stderr

        plaintext = cli("route", "--prompt", CODE_PROMPT, "--timeout", "3")
        assert plaintext.returncode == 1 and "UNAVAILABLE" in plaintext.stderr
        garbage_ca = cli("route", "--ca", str(tokens), "--prompt", CODE_PROMPT)
        assert garbage_ca.returncode == 1 and "--ca" in garbage_ca.stderr
        assert "Traceback" not in garbage_ca.stderr
    text = log.read_text()
    assert "refused /uniroute.v1.Registry/RegisterModel" in text
    for token in ALL_TOKENS:
        assert token not in text
