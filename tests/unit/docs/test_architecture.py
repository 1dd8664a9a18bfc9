"""docs/architecture.md tells the truth about the code: a newcomer trusts it, so it must fail a
test as soon as a topic, a service, a table or a route it names changes.

- Kafka: every topic of reflexe_common.topics (ALL_TOPICS, and each inbound kind as
  `<prefix><FINESS>`) is in the page, every `reflexe.…v<N>` topic name in the page is one of
  them, and the topic table's "produced by" and "consumed by" name exactly the services that
  reflexe_common.kafka_acls lets write and read the topic.
- Services: the page describes (a `###` under "Services") every directory of services/, and
  nothing else.
- PostgreSQL: the schema table lists, for each service's schema, exactly the tables its
  migrations leave; the platform's tables every schema has; the indicators' fact tables of
  each generation schema.
- HTTP: every `METHOD /path` the page names is a route some service declares.
"""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from reflexe_common.kafka_acls import service_acls
from reflexe_common.topics import ALL_TOPICS, INBOUND_KINDS

REPO = Path(__file__).resolve().parents[3]
PAGE = REPO / "docs" / "architecture.md"
FINESS_PLACEHOLDER = "<FINESS>"
# A topic name as the page writes it: `reflexe.<words>.v<N>`, and for an inbound kind
# `.<FINESS>`, `.*` or a FINESS after it. `reflexe.v1.SubmitReferral` (a protobuf message) is not one.
TOPIC_NAME = re.compile(r"reflexe\.(?!v\d)[a-z][a-z0-9_-]*(?:\.[a-z0-9_-]+)*?\.v\d+(?:\.(?:<FINESS>|\*|[0-9AB]{9}))?")
ROUTE = re.compile(r"\b(GET|POST|PUT|PATCH|DELETE) (/[\w{}/.-]*\w[}/]?)")


def page_text() -> str:
    return PAGE.read_text(encoding="utf-8")


def sections(text: str) -> dict[str, str]:
    """The page's `## ` sections by title (fenced code left in)."""
    parts = re.split(r"^## +(.+)$", text, flags=re.MULTILINE)
    return {title.strip(): body for title, body in zip(parts[1::2], parts[2::2], strict=True)}


def section(text: str, starting: str) -> str:
    found = [body for title, body in sections(text).items() if title.lower().startswith(starting.lower())]
    assert len(found) == 1, f"docs/architecture.md needs one section titled {starting!r}..."
    return found[0]


def table_rows(text: str) -> list[list[str]]:
    """The body rows of the Markdown tables in `text`, as lists of cells."""
    rows = []
    for line in text.splitlines():
        line = line.strip()
        if not line.startswith("|") or re.fullmatch(r"\|[\s|:-]+\|", line):
            continue
        rows.append([cell.strip() for cell in line.strip("|").split("|")])
    return [r for r in rows if r and not r[0].lower() in ("topic", "schema")]  # headers


def backticked(cell: str) -> list[str]:
    return re.findall(r"`([^`]+)`", cell)


# -- what the code says ----------------------------------------------------------------------------

def service_dirs() -> set[str]:
    return {d.name for d in (REPO / "services").iterdir() if d.is_dir() and (d / "src").is_dir()}


def code_topics() -> set[str]:
    """Every topic the platform has: the fixed ones, and each inbound kind as a FINESS's topic."""
    return {t.name for t in ALL_TOPICS} | {kind.prefix + FINESS_PLACEHOLDER for kind in INBOUND_KINDS.values()}


def kafka_services() -> dict[str, list]:
    """The ACLs of each service that has a Kafka principal (the gateway has none)."""
    acls = {}
    for service in sorted(service_dirs()):
        try:
            acls[service] = service_acls(service)
        except ValueError:
            continue
    return acls


def writers_and_readers(acls: dict[str, list]) -> dict[str, tuple[set[str], set[str]]]:
    """topic → (services that write it, services that read it). A service that writes a topic
    also reads it back (outbox recovery): that is not consuming it."""
    flows: dict[str, tuple[set[str], set[str]]] = {name: (set(), set()) for name in code_topics()}
    inbound_by_prefix = {kind.prefix: kind.prefix + FINESS_PLACEHOLDER for kind in INBOUND_KINDS.values()}
    for service, grants in acls.items():
        topic_grants = [a for a in grants if a.resource_type == "TOPIC"]
        writes = {a.resource_name for a in topic_grants if a.operation == "WRITE" and a.pattern == "LITERAL"}
        for acl in topic_grants:
            name = inbound_by_prefix.get(acl.resource_name) if acl.pattern == "PREFIXED" else acl.resource_name
            if name not in flows:
                continue
            if acl.operation == "WRITE":
                flows[name][0].add(service)
            elif acl.operation == "READ" and acl.resource_name not in writes:
                flows[name][1].add(service)
    return flows


def migration_tables(folder: Path) -> set[str]:
    """The tables the migrations of `folder` leave, applied in order."""
    tables: set[str] = set()
    for sql in sorted(folder.glob("*.sql")):
        text = re.sub(r"--[^\n]*", "", sql.read_text(encoding="utf-8"))
        for verb, name in re.findall(r"\b(CREATE|DROP) TABLE (?:IF (?:NOT )?EXISTS )?\"?(\w+)\"?", text, re.IGNORECASE):
            (tables.add if verb.upper() == "CREATE" else tables.discard)(name)
    return tables


def service_schema(service: str) -> str:
    app = REPO / "services" / service / "src" / f"reflexe_{service}" / "entrypoints" / "app.py"
    assert app.is_file(), f"services/{service} has no entrypoints/app.py naming its SCHEMA"
    found = re.search(r'^SCHEMA = "(\w+)"', app.read_text(encoding="utf-8"), re.MULTILINE)
    assert found, f"{app}: no SCHEMA"
    return found.group(1)


def expected_schemas() -> dict[str, set[str]]:
    """schema (as the page writes it) → its tables."""
    from reflexe_indicators.adapters.day_counts import FAMILIES
    from reflexe_indicators.adapters.store import generation_schema
    from reflexe_indicators.domain.facts import TABLES

    expected = {}
    for service in service_dirs():
        package = REPO / "services" / service / "src" / f"reflexe_{service}"
        expected[service_schema(service)] = migration_tables(package / "migrations")
    # The indicators' facts, and the day counts kept from them, live in one schema per generation,
    # created by the service itself.
    generation = generation_schema(service_schema("indicators"), 0).removesuffix("0") + "<N>"
    expected[generation] = {t.name for t in TABLES} | {family.table for family in FAMILIES}
    common = REPO / "libs" / "common" / "src" / "reflexe_common"
    ledger = re.findall(r"CREATE TABLE IF NOT EXISTS (\w+)", (common / "db.py").read_text(encoding="utf-8"))
    expected["every schema"] = migration_tables(common / "sql") | set(ledger)
    return expected


def declared_routes() -> set[tuple[str, str]]:
    """(METHOD, path with {} for each parameter) of every route declared with a literal path."""
    routes = set()
    sources = [*REPO.glob("services/*/src/**/entrypoints/**/*.py"), *REPO.glob("libs/common/src/reflexe_common/*.py")]
    for source in sources:
        text = source.read_text(encoding="utf-8")
        prefix = re.search(r'APIRouter\([^)]*prefix="([^"]*)"', text)
        for method, path in re.findall(r'@router\.(get|post|put|patch|delete)\(\s*"([^"]*)"', text):
            routes.add((method.upper(), _route_key((prefix.group(1) if prefix else "") + path)))
    return routes


def _route_key(path: str) -> str:
    return re.sub(r"\{[^}]*\}", "{}", path).rstrip("/")


# -- the checks, on any page and any code (so that a check can be shown to fail) -------------------

def topic_problems(text: str, topics: set[str]) -> list[str]:
    named = set(TOPIC_NAME.findall(text))
    prefixes = {t.removesuffix(FINESS_PLACEHOLDER) for t in topics if t.endswith(FINESS_PLACEHOLDER)}
    problems = [f"topic {t} is not in the page" for t in sorted(topics) if t not in named]
    for name in sorted(named):
        base, _, last = name.rpartition(".")
        inbound_form = base + "." in prefixes and (last in ("*", FINESS_PLACEHOLDER) or re.fullmatch(r"[0-9AB]{9}", last))
        if name not in topics and not inbound_form:
            problems.append(f"the page names topic {name}, which the code does not have")
    return problems


def topic_table_problems(text: str, flows: dict[str, tuple[set[str], set[str]]], services: set[str]) -> list[str]:
    problems = []
    rows = {}
    for row in table_rows(section(text, "Kafka topics")):
        names = [n for n in backticked(row[0]) if TOPIC_NAME.fullmatch(n)]
        if len(names) != 1 or len(row) < 3:
            problems.append(f"topic table row without one topic and its producers and consumers: {row}")
            continue
        rows[names[0]] = row
    for topic, (writers, readers) in sorted(flows.items()):
        if topic not in rows:
            problems.append(f"topic {topic} has no row in the topic table")
            continue
        for column, expected in ((1, writers), (2, readers)):
            said = {s for s in services if re.search(rf"\b{re.escape(s)}\b", rows[topic][column])}
            if said != expected:
                what = "produced by" if column == 1 else "consumed by"
                problems.append(f"{topic}: the page says {what} {sorted(said)}, the ACLs {sorted(expected)}")
    problems += [f"the topic table has {t}, which the code does not have" for t in sorted(set(rows) - set(flows))]
    return problems


def service_problems(text: str, services: set[str]) -> list[str]:
    described = set(re.findall(r"^### +(\S+)\s*$", section(text, "Services"), re.MULTILINE))
    return ([f"service {s} (services/{s}) is not described under Services" for s in sorted(services - described)]
            + [f"the page describes a service {s}, but there is no services/{s}" for s in sorted(described - services)])


def table_problems(text: str, expected: dict[str, set[str]]) -> list[str]:
    problems = []
    said = {}
    for row in table_rows(section(text, "PostgreSQL")):
        schema = backticked(row[0])
        said[schema[0] if schema else row[0]] = set(backticked(row[1])) if len(row) > 1 else set()
    for schema, tables in sorted(expected.items()):
        if schema not in said:
            problems.append(f"schema {schema} has no row in the PostgreSQL table")
            continue
        problems += [f"{schema}: table {t} (from the migrations) is not in the page" for t in sorted(tables - said[schema])]
        problems += [f"{schema}: the page names table {t}, which its migrations do not leave"
                     for t in sorted(said[schema] - tables)]
    problems += [f"the PostgreSQL table has a schema {s} that no service has" for s in sorted(set(said) - set(expected))]
    return problems


def route_problems(text: str, routes: set[tuple[str, str]]) -> list[str]:
    return [f"the page names {method} {path}, which no service declares"
            for method, path in sorted(set(ROUTE.findall(text))) if (method, _route_key(path)) not in routes]


# -- tests -----------------------------------------------------------------------------------------

def test_every_topic_of_the_code_is_in_the_page_and_every_topic_of_the_page_in_the_code() -> None:
    assert topic_problems(page_text(), code_topics()) == []


def test_the_topic_table_names_who_writes_and_reads_each_topic_as_the_acls_do() -> None:
    assert topic_table_problems(page_text(), writers_and_readers(kafka_services()), service_dirs()) == []


def test_every_service_is_described_and_every_service_described_exists() -> None:
    assert service_problems(page_text(), service_dirs()) == []


def test_the_schema_table_lists_the_tables_of_the_migrations() -> None:
    assert table_problems(page_text(), expected_schemas()) == []


def test_every_route_the_page_names_exists() -> None:
    routes = declared_routes()
    assert ("POST", "/v1/referrals") in routes  # the scan finds routes at all
    assert route_problems(page_text(), routes) == []


def test_the_readme_links_the_page() -> None:
    assert "(docs/architecture.md)" in (REPO / "README.md").read_text(encoding="utf-8")


# -- the checks fail when the code moves -----------------------------------------------------------
# Each compares with the problems of the code as it is, so that it shows what the change adds.

def renamed(names: set[str], old: str, new: str) -> set[str]:
    return {new if n == old else n for n in names}


def added(problems: list[str], baseline: list[str]) -> set[str]:
    return set(problems) - set(baseline)


@pytest.mark.parametrize("topic", sorted(code_topics()))
def test_a_renamed_topic_is_reported(topic: str) -> None:
    new = topic.replace(".v1", ".v2")
    assert added(topic_problems(page_text(), renamed(code_topics(), topic, new)),
                 topic_problems(page_text(), code_topics()))
    flows = writers_and_readers(kafka_services())
    baseline = topic_table_problems(page_text(), flows, service_dirs())
    flows[new] = flows.pop(topic)
    assert added(topic_table_problems(page_text(), flows, service_dirs()), baseline)


def test_a_topic_written_or_read_by_another_service_is_reported() -> None:
    flows = writers_and_readers(kafka_services())
    baseline = topic_table_problems(page_text(), flows, service_dirs())
    writers, readers = flows["reflexe.capacity.events.v1"]
    flows["reflexe.capacity.events.v1"] = (writers | {"notify"}, readers - {"notify"})
    assert len(added(topic_table_problems(page_text(), flows, service_dirs()), baseline)) == 2


def test_a_new_or_removed_service_is_reported() -> None:
    baseline = service_problems(page_text(), service_dirs())
    assert added(service_problems(page_text(), service_dirs() | {"no-such-service"}), baseline)
    assert added(service_problems(page_text(), service_dirs() - {"gateway"}), baseline)


def test_a_new_dropped_or_renamed_table_is_reported() -> None:
    expected = expected_schemas()
    baseline = table_problems(page_text(), expected)
    for changed in ({**expected, "gateway": expected["gateway"] | {"message_parts"}},
                    {**expected, "capacity": expected["capacity"] - {"holds"}},
                    {**expected, "every schema": renamed(expected["every schema"], "inbox", "inbox_v2")}):
        assert added(table_problems(page_text(), changed), baseline)


def test_migrations_are_read_in_order_with_their_drops(tmp_path: Path) -> None:
    (tmp_path / "001_a.sql").write_text("CREATE TABLE a (x int);\n-- CREATE TABLE commented (x int);\n"
                                        "CREATE TABLE IF NOT EXISTS b (x int);")
    (tmp_path / "002_b.sql").write_text("DROP TABLE IF EXISTS a;\nCREATE TABLE c (x int);")
    assert migration_tables(tmp_path) == {"b", "c"}


def test_a_route_that_does_not_exist_is_reported() -> None:
    assert route_problems("`POST /v1/referrals/{id}/teleport`", declared_routes())
    assert not route_problems("`GET /v1/referrals/{referral_id}` and `GET /v1/referrals/{id}`", declared_routes())
