"""A privacy scan: looks for patients' direct identifiers everywhere the platform keeps or says
anything — every Kafka record (value, key and headers, on every topic), every log line, every
metric and every row of every table of the platform's schemas.

Two kinds of needle:
- canaries: the very identities the simulated hospitals keep for their patients (names, NIR,
  birth dates in the usual spellings), which must never leave them;
- shapes: a NIR/INS with a valid key (15 digits, spaces allowed, not the decimals of a number; the platform's own broad
  detector would also flag epoch milliseconds in logs), and full dates before 2000 (no platform
  timestamp is that old; a birth date of an adult is).
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass, field
from functools import cached_property
from datetime import date
from pathlib import Path

import asyncpg
from aiokafka import AIOKafkaConsumer, TopicPartition
from aiokafka.admin import AIOKafkaAdminClient

_NIR = re.compile(r"(?<![0-9])(?<![0-9]\.)([1278])[ ]?([0-9]{2})[ ]?(0[1-9]|1[0-2])[ ]?([0-9]{2}|2[AB])[ ]?([0-9]{3})[ ]?([0-9]{3})[ ]?([0-9]{2})(?![0-9])")
_OLD_DATE = re.compile(r"(?<![0-9])(?:1[89][0-9]{2}-[01][0-9]-[0-3][0-9]|[0-3][0-9]/[01][0-9]/1[89][0-9]{2})(?![0-9])")


def _valid_nir(match: re.Match[str]) -> bool:
    digits = "".join(match.groups()[:-1]).replace("2A", "19").replace("2B", "18")  # Corsica's key rule
    return int(match.group(7)) == 97 - int(digits) % 97


def _column_as_text(name: str, data_type: str) -> str:
    quoted = '"' + name.replace('"', '""') + '"'
    return f"encode({quoted}, 'escape')" if data_type == "bytea" else f"{quoted}::text"


@dataclass
class Findings:
    scanned: dict[str, int] = field(default_factory=dict)
    found: list[str] = field(default_factory=list)

    def count(self, where: str, n: int = 1) -> None:
        self.scanned[where] = self.scanned.get(where, 0) + n


@dataclass(frozen=True)
class PrivacyScan:
    canaries: tuple[str, ...]

    @classmethod
    def of_identities(cls, path: Path) -> PrivacyScan:
        needles: set[str] = set()
        for line in path.read_text(encoding="utf-8").splitlines():
            record = json.loads(line)
            born = date.fromisoformat(record["birth_date"])
            needles |= {record["nir"], record["nir"][:13], f"{record['family_name']} {record['given_name']}",
                        f"{record['given_name']} {record['family_name']}", born.isoformat(), born.strftime("%d/%m/%Y"),
                        born.strftime("%Y%m%d"), born.strftime("%d%m%Y")}
            if record.get("local_id"):  # the hospital's own patient number (PID-3), which the gateway drops
                needles.add(record["local_id"])
        return cls(tuple(sorted(needles)))

    @cached_property
    def _digit_canaries(self) -> re.Pattern[str] | None:
        """All-digit canaries (NIR, compact birth dates) count only as a whole digit run, and not
        as the decimals of a number: a birth date 06051939 is not a leak inside the duration
        0.0605193910, nor in 0.06051939."""
        digits = [re.escape(c) for c in self.canaries if c.isdigit()]
        return re.compile(r"(?<![0-9])(?<![0-9]\.)(?:" + "|".join(digits) + r")(?![0-9])") if digits else None

    def check(self, where: str, text: str, findings: Findings) -> None:
        findings.count(where.split(":", 1)[0])
        hits = [c for c in self.canaries if not c.isdigit() and c in text]
        if self._digit_canaries is not None:
            hits += self._digit_canaries.findall(text)
        hits += [m.group(0) for m in _NIR.finditer(text) if _valid_nir(m)]
        hits += _OLD_DATE.findall(text)
        if hits:
            findings.found.append(f"{where}: {sorted(set(hits))[:5]} in {text[:200]!r}")

    async def kafka(self, options: dict, findings: Findings) -> None:
        """Every record of every topic, as the super user (read_uncommitted: aborted data counts too)."""
        admin = AIOKafkaAdminClient(**options)
        await admin.start()
        try:
            topics = [t for t in await admin.list_topics() if not t.startswith("__")]
            described = await admin.describe_topics(topics)
        finally:
            await admin.close()
        tps = [TopicPartition(d["topic"], p["partition"]) for d in described for p in d["partitions"]]
        consumer = AIOKafkaConsumer(**options, enable_auto_commit=False)
        await consumer.start()
        try:
            consumer.assign(tps)
            await consumer.seek_to_beginning(*tps)
            end = await consumer.end_offsets(tps)
            while any([await consumer.position(tp) < end[tp] for tp in tps]):
                for tp, records in (await consumer.getmany(*tps, timeout_ms=500)).items():
                    for r in records:
                        parts = [r.value or b"", r.key or b""] + [v or b"" for _, v in r.headers]
                        text = " ".join(p.decode("utf-8", "replace") for p in parts)
                        self.check(f"kafka:{tp.topic}[{tp.partition}]@{r.offset}", text, findings)
        finally:
            await consumer.stop()

    def logs(self, paths: list[Path], findings: Findings) -> None:
        for path in paths:
            findings.count("log file")  # a service that logged nothing at WARNING still counts as read
            for number, line in enumerate(path.read_text(encoding="utf-8", errors="replace").splitlines(), 1):
                self.check(f"log:{path.name}:{number}", line, findings)

    def metrics(self, name: str, exposition: str, findings: Findings) -> None:
        for line in exposition.splitlines():
            if line and not line.startswith("#"):
                self.check(f"metric:{name}", line, findings)

    async def database(self, database_url: str, schemas: list[str], findings: Findings) -> None:
        """Every row of every table of these schemas (LIKE patterns), as text (all its columns)."""
        conn = await asyncpg.connect(database_url)
        try:
            tables = await conn.fetch("SELECT table_schema, table_name FROM information_schema.tables "
                                      "WHERE table_type = 'BASE TABLE' AND table_schema LIKE ANY($1::text[])", schemas)
            for table in tables:
                qualified = f'"{table["table_schema"]}"."{table["table_name"]}"'
                columns = await conn.fetch("SELECT column_name, data_type FROM information_schema.columns "
                                           "WHERE table_schema = $1 AND table_name = $2",
                                           table["table_schema"], table["table_name"])
                # Binary payloads (protobuf) as the bytes' own text, not as a hex dump whose digit
                # runs would look like anything.
                parts = [_column_as_text(c["column_name"], c["data_type"]) for c in columns]
                async with conn.transaction():
                    async for row in conn.cursor(f"SELECT concat_ws(' ', {', '.join(parts)}) AS row FROM {qualified}"):
                        self.check(f"table:{qualified}", row["row"], findings)
        finally:
            await conn.close()
