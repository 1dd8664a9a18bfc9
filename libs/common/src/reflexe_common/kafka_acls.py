"""Who may do what on Kafka: the ONE declaration of every principal's ACLs, and the admin steps
that apply it (deploy/local/infra.sh runs `python -m reflexe_common.kafka_acls apply`).

Principals (SASL/SCRAM-SHA-512 users):
- `admin`: the broker's super user; infra.sh, tests and admin tooling only, never a service.
- one per service (referral, capacity, indicators, notify): the topics it reads and writes, its
  consumer groups, its outbox relay's transactional id. Locally every service runs ensure_topics
  at start, so each may CREATE (and DESCRIBE) the platform's topics, by literal name; on
  Kubernetes the operator creates them and the generated KafkaUsers drop CREATE
  (scripts/gen_k8s_manifests.py, REFLEXE_KAFKA_CREATE_TOPICS=false).
- `system-<FINESS>` per hospital or HAD information system publishing straight onto Kafka: WRITE on
  its own inbound topic only (topics.InboundKind), so the topic a command arrives on names its
  sender and a command cannot speak for another establishment.

    python -m reflexe_common.kafka_acls apply                 # service principals and their ACLs
    python -m reflexe_common.kafka_acls register-system --finess 340000017 --kind hospital
    python -m reflexe_common.kafka_acls show                  # the declared ACLs

They read KAFKA_BOOTSTRAP, REFLEXE_KAFKA_ADMIN_PASSWORD and the services' REFLEXE_KAFKA_<SERVICE>_PASSWORD
(what `deploy/local/infra.sh env` prints), and KAFKA_SECURITY_PROTOCOL (default SASL_PLAINTEXT).

The Admin API calls aiokafka does not wrap (batched CreateAcls, DescribeAcls, DeleteAcls,
AlterUserScramCredentials) are sent as raw protocol requests through aiokafka's admin client.
"""

from __future__ import annotations

import argparse
import asyncio
import hashlib
import os
import secrets
import sys
from collections.abc import Iterable
from dataclasses import dataclass

from aiokafka.admin import AIOKafkaAdminClient
from aiokafka.errors import for_code
from aiokafka.protocol.admin import (
    CreateAclsRequest_v1,
    DeleteAclsRequest_v1,
    DescribeAclsRequest_v1,
)
from aiokafka.protocol.api import Request, RequestStruct, Response
from aiokafka.protocol.types import (
    CompactArray,
    CompactBytes,
    CompactString,
    Int8,
    Int16,
    Int32,
    Schema,
    TaggedFields,
)

from reflexe_common.kafka import KafkaAccess, password_variable
from reflexe_common.outbox import outbox_transactional_id
from reflexe_common.topics import (
    ALL_TOPICS,
    CAPACITY_EVENTS,
    DEAD_LETTERS,
    INBOUND_CAPACITY,
    INBOUND_KINDS,
    INBOUND_REFERRALS,
    MATCHING_EVENTS,
    REFERRAL_EVENTS,
    Topic,
    ensure_topics,
)

ADMIN = "admin"
SERVICES = ("referral", "capacity", "indicators", "notify")
SCRAM_MECHANISM = "SCRAM-SHA-512"
SCRAM_ITERATIONS = 8192  # Kafka accepts 4096..16384 for SCRAM-SHA-512
CLUSTER = "kafka-cluster"

# Kafka's wire codes (org.apache.kafka.common.resource / acl).
RESOURCE_TYPES = {"TOPIC": 2, "GROUP": 3, "CLUSTER": 4, "TRANSACTIONAL_ID": 5}
PATTERN_TYPES = {"LITERAL": 3, "PREFIXED": 4}
OPERATIONS = {"READ": 3, "WRITE": 4, "CREATE": 5, "DESCRIBE": 8, "IDEMPOTENT_WRITE": 12}
ANY, ALLOW = 1, 3


@dataclass(frozen=True, order=True)
class Acl:
    """One ALLOW binding: principal may `operation` on the resource (a name, or a name prefix)."""

    principal: str  # the user name, without "User:"
    resource_type: str
    resource_name: str
    operation: str
    pattern: str = "LITERAL"

    def __str__(self) -> str:
        prefix = "*" if self.pattern == "PREFIXED" else ""
        return f"User:{self.principal} {self.operation} {self.resource_type}:{self.resource_name}{prefix}"


def _grant(principal: str, resource_type: str, names: Iterable[str], operations: Iterable[str],
           pattern: str = "LITERAL") -> list[Acl]:
    return [Acl(principal, resource_type, name, op, pattern) for name in names for op in operations]


def _topics(*topics: Topic) -> list[str]:
    return [t.name for t in topics]


def service_acls(service: str) -> list[Acl]:
    """What the service's own code does on Kafka, and nothing more. Consumer groups are named in
    each service's entrypoints/app.py (faust streams, and ConsumerLoop for the inbound topics)."""
    read, write, groups, group_prefixes, inbound = [], [], [], [], None
    outbox = False
    if service == "referral":
        read, write, outbox = [MATCHING_EVENTS], [REFERRAL_EVENTS], True
        group_prefixes, inbound = ["referral-"], INBOUND_REFERRALS  # referral-matching, referral-submissions
    elif service == "capacity":
        read, write, outbox = [REFERRAL_EVENTS], [MATCHING_EVENTS, CAPACITY_EVENTS], True
        groups, group_prefixes, inbound = ["reflexe-matcher"], ["capacity-"], INBOUND_CAPACITY
    elif service == "indicators":
        # reflexe-indicators and -capacity (faust), and -replay-g<N> for each replay generation
        read, group_prefixes = [REFERRAL_EVENTS, CAPACITY_EVENTS], ["reflexe-indicators"]
    elif service == "notify":
        read, groups = [REFERRAL_EVENTS, MATCHING_EVENTS, CAPACITY_EVENTS], ["notify"]
    else:
        raise ValueError(f"unknown service {service!r}")
    acls = _grant(service, "TOPIC", _topics(*ALL_TOPICS), ["CREATE", "DESCRIBE"])  # ensure_topics
    # The outbox relay reads back the topics it writes: after a crash it checks with read_committed
    # whether its in-flight batch was committed.
    acls += _grant(service, "TOPIC", _topics(*read, *(write if outbox else [])), ["READ"])
    acls += _grant(service, "TOPIC", _topics(*write, DEAD_LETTERS), ["WRITE"])
    acls += _grant(service, "GROUP", groups, ["READ", "DESCRIBE"])
    acls += _grant(service, "GROUP", group_prefixes, ["READ", "DESCRIBE"], "PREFIXED")
    if inbound is not None:
        acls += _grant(service, "TOPIC", [inbound.prefix], ["READ", "DESCRIBE"], "PREFIXED")
    if outbox:
        acls += _grant(service, "TRANSACTIONAL_ID", [outbox_transactional_id(service)], ["WRITE", "DESCRIBE"])
    # Every service has an idempotent producer (dead letters); Kafka >= 3.0 implies it from
    # WRITE on a topic, kept explicit for clusters that do not.
    acls += _grant(service, "CLUSTER", [CLUSTER], ["IDEMPOTENT_WRITE"])
    return sorted(set(acls))


def system_principal(finess: str) -> str:
    return f"system-{finess}"


def system_acls(finess: str, kind: str) -> list[Acl]:
    """A hospital or HAD information system: publish on its own inbound topic, nothing else."""
    topic = INBOUND_KINDS[kind].topic(finess)
    return _grant(system_principal(finess), "TOPIC", [topic.name], ["WRITE", "DESCRIBE"])


def declared_acls() -> list[Acl]:
    return [acl for service in SERVICES for acl in service_acls(service)]


# ---------------------------------------------------------------- Admin API requests


class _CreateAcls(Request[CreateAclsRequest_v1]):
    API_KEY = 30

    def __init__(self, acls: list[Acl]) -> None:
        self._acls = acls

    def build(self, request_struct_class: type[CreateAclsRequest_v1]) -> CreateAclsRequest_v1:
        return request_struct_class([
            (RESOURCE_TYPES[a.resource_type], a.resource_name, PATTERN_TYPES[a.pattern], f"User:{a.principal}", "*",
             OPERATIONS[a.operation], ALLOW) for a in self._acls])


class _DescribeAcls(Request[DescribeAclsRequest_v1]):
    API_KEY = 29

    def __init__(self, principal: str) -> None:
        self._principal = principal

    def build(self, request_struct_class: type[DescribeAclsRequest_v1]) -> DescribeAclsRequest_v1:
        return request_struct_class(ANY, None, ANY, f"User:{self._principal}", None, ANY, ANY)


class _DeleteAcls(Request[DeleteAclsRequest_v1]):
    API_KEY = 31

    def __init__(self, acls: list[Acl]) -> None:
        self._acls = acls

    def build(self, request_struct_class: type[DeleteAclsRequest_v1]) -> DeleteAclsRequest_v1:
        return request_struct_class([
            (RESOURCE_TYPES[a.resource_type], a.resource_name, PATTERN_TYPES[a.pattern], f"User:{a.principal}", "*",
             OPERATIONS[a.operation], ALLOW) for a in self._acls])


class _AlterScramResponse(Response):
    API_KEY = 51
    API_VERSION = 0
    SCHEMA = Schema(
        ("throttle_time_ms", Int32),
        ("results", CompactArray(("user", CompactString("utf-8")), ("error_code", Int16),
                                 ("error_message", CompactString("utf-8")), ("tags", TaggedFields))),
        ("tags", TaggedFields),
    )


class _AlterScramStruct(RequestStruct):
    FLEXIBLE_VERSION = True
    API_KEY = 51
    API_VERSION = 0
    RESPONSE_TYPE = _AlterScramResponse
    SCHEMA = Schema(
        ("deletions", CompactArray(("name", CompactString("utf-8")), ("mechanism", Int8), ("tags", TaggedFields))),
        ("upsertions", CompactArray(("name", CompactString("utf-8")), ("mechanism", Int8), ("iterations", Int32),
                                    ("salt", CompactBytes), ("salted_password", CompactBytes), ("tags", TaggedFields))),
        ("tags", TaggedFields),
    )


class _AlterScram(Request[_AlterScramStruct]):
    API_KEY = 51

    def __init__(self, credentials: dict[str, str]) -> None:
        self._credentials = credentials

    def build(self, request_struct_class: type[_AlterScramStruct]) -> _AlterScramStruct:
        upsertions = []
        for name, password in self._credentials.items():
            salt = secrets.token_bytes(32)
            # SCRAM's SaltedPassword (RFC 5802 Hi()); the broker derives the stored and server keys.
            salted = hashlib.pbkdf2_hmac("sha512", password.encode(), salt, SCRAM_ITERATIONS)
            upsertions.append((name, 2, SCRAM_ITERATIONS, salt, salted, {}))  # 2 = SCRAM-SHA-512
        return request_struct_class([], upsertions, {})


def _raise_for(code: int, message: str | None, what: str) -> None:
    if code:
        raise for_code(code)(f"{what}: {message or ''}".strip())


class KafkaAdmin:
    """The super user's Admin API session: credentials, topics and ACLs."""

    def __init__(self, kafka: KafkaAccess) -> None:
        self.kafka = kafka
        self._admin = AIOKafkaAdminClient(**kafka.options())

    async def __aenter__(self) -> KafkaAdmin:
        await self._admin.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self._admin.close()

    async def _send(self, request: Request) -> Response:
        return await self._admin._send_request(request)

    async def upsert_scram(self, credentials: dict[str, str]) -> None:
        if not credentials:
            return
        response = await self._send(_AlterScram(credentials))
        for user, code, message, _ in response.results:
            _raise_for(code, message, f"SCRAM credential of {user}")

    async def create_acls(self, acls: list[Acl]) -> None:
        """Idempotent: creating a binding that exists changes nothing."""
        if not acls:
            return
        response = await self._send(_CreateAcls(acls))
        for acl, (code, message) in zip(acls, response.creation_responses, strict=True):
            _raise_for(code, message, f"ACL {acl}")

    async def acls_of(self, principal: str) -> list[Acl]:
        response = await self._send(_DescribeAcls(principal))
        _raise_for(response.error_code, response.error_message, f"ACLs of {principal}")
        names = {v: k for k, v in RESOURCE_TYPES.items()}
        patterns = {v: k for k, v in PATTERN_TYPES.items()}
        operations = {v: k for k, v in OPERATIONS.items()}
        found = []
        for resource_type, resource_name, pattern, bindings in response.resources:
            for _, _, operation, _ in bindings:
                found.append(Acl(principal, names.get(resource_type, str(resource_type)), resource_name,
                                 operations.get(operation, str(operation)), patterns.get(pattern, str(pattern))))
        return found

    async def delete_acls(self, acls: list[Acl]) -> None:
        if not acls:
            return
        response = await self._send(_DeleteAcls(acls))
        for acl, (code, message, _) in zip(acls, response.filter_responses, strict=True):
            _raise_for(code, message, f"deleting ACL {acl}")

    async def apply(self, principal: str, acls: list[Acl]) -> list[Acl]:
        """Make the principal's ACLs exactly `acls`; returns the stale ones it removed."""
        await self.create_acls(acls)
        stale = [a for a in await self.acls_of(principal) if a not in set(acls)]
        await self.delete_acls(stale)
        return stale


async def apply_services(admin_kafka: KafkaAccess, passwords: dict[str, str]) -> None:
    """Every service principal: its SCRAM credential and exactly its declared ACLs."""
    async with KafkaAdmin(admin_kafka) as admin:
        await admin.upsert_scram(passwords)
        for service in SERVICES:
            for acl in await admin.apply(service, service_acls(service)):
                print(f"removed stale ACL {acl}", file=sys.stderr)


@dataclass(frozen=True)
class RegisteredSystem:
    principal: str
    password: str
    topic: str


async def register_system(admin_kafka: KafkaAccess, finess: str, kind: str,
                          password: str | None = None) -> RegisteredSystem:
    """A hospital (kind hospital) or HAD (kind had) system: its principal, its inbound topic and
    its ACLs. Registering again rotates its password."""
    topic = INBOUND_KINDS[kind].topic(finess)
    principal = system_principal(finess)
    password = password or secrets.token_urlsafe(32)
    await ensure_topics(admin_kafka, (topic,))
    async with KafkaAdmin(admin_kafka) as admin:
        await admin.upsert_scram({principal: password})
        await admin.create_acls(system_acls(finess, kind))
    return RegisteredSystem(principal, password, topic.name)


def admin_access_from_env() -> KafkaAccess:
    protocol = os.environ.get("KAFKA_SECURITY_PROTOCOL", "SASL_PLAINTEXT")
    return KafkaAccess(os.environ.get("KAFKA_BOOTSTRAP", "127.0.0.1:19092"), protocol,
                       os.environ.get("KAFKA_SASL_MECHANISM", SCRAM_MECHANISM), ADMIN,
                       os.environ.get(password_variable(ADMIN)), os.environ.get("KAFKA_SSL_CAFILE"))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m reflexe_common.kafka_acls", description=__doc__.split("\n\n")[0])
    commands = parser.add_subparsers(dest="command", required=True)
    commands.add_parser("apply", help="create the service principals and make their ACLs exactly the declared ones")
    register = commands.add_parser("register-system", help="a hospital or HAD system's principal, inbound topic and ACLs")
    register.add_argument("--finess", required=True)
    register.add_argument("--kind", required=True, choices=sorted(INBOUND_KINDS))
    commands.add_parser("show", help="print the declared ACLs")
    args = parser.parse_args(argv)
    if args.command == "show":
        for acl in declared_acls():
            print(acl)
        return 0
    kafka = admin_access_from_env()
    if args.command == "apply":
        missing = [password_variable(s) for s in SERVICES if not os.environ.get(password_variable(s))]
        if missing:
            parser.error(f"missing {', '.join(missing)}")
        asyncio.run(apply_services(kafka, {s: os.environ[password_variable(s)] for s in SERVICES}))
        print(f"applied {len(declared_acls())} ACLs for {', '.join(SERVICES)}", file=sys.stderr)
        return 0
    try:
        system = asyncio.run(register_system(kafka, args.finess, args.kind))
    except ValueError as exc:
        parser.error(str(exc))
    print(f"KAFKA_USERNAME={system.principal}")
    print(f"KAFKA_PASSWORD={system.password}")
    print(f"KAFKA_TOPIC={system.topic}")
    print(f"# SASL {SCRAM_MECHANISM}; the password is shown only now (registering again rotates it)",
          file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
