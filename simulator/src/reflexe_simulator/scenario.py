"""Scenario data: the fictional establishments of each simulated department.

Deterministic for a seed: the same ``(seed, departments)`` always builds the same HADs, zones,
emergency departments, EHPADs and GP practices. Communes and populations are the REAL ones of
the official geographic code (``reflexe_common.geography``); establishments and FINESS numbers
are fictional.

Zones: the geography carries no coordinates, so an HAD's zone cannot be contiguous. Each HAD
is anchored on a real town; the other communes are shared out by population (largest first,
each to the HAD whose served population is lowest relative to its size), so every commune is
covered by exactly one HAD; then the most populous communes around the prefecture (the
department's largest commune) are also covered by one or two other HADs: that overlap is where
HADs compete for a referral.
"""

from __future__ import annotations

import random
import re
from dataclasses import dataclass, field
from typing import Any

from reflexe_common.finess import with_key
from reflexe_common.geography import Commune, Geography
from reflexe_common.vocabulary import Equipment, Mention, SourceKind

# The kind digit inside our fictional FINESS numbers (after the '9' fiction marker).
KIND_DIGIT = {"HAD": "0", "HOSPITAL": "1", "EHPAD": "2", "GP": "3"}

# MPP codes nearly every HAD supports (the bulk of HAD activity).
COMMON_MPP = ("03", "04", "07", "09", "14")
# Optional MPP codes with the probability that a given HAD supports them.
OPTIONAL_MPP = {
    "01": 0.6, "02": 0.7, "05": 0.5, "06": 0.8, "08": 0.9, "10": 0.7, "13": 0.6, "15": 0.8,
    "17": 0.3, "18": 0.4, "24": 0.4, "25": 0.9, "29": 0.6,
}

# Curated anchors for the two reference departments: (HAD name, anchor commune name).
CURATED_HADS: dict[str, list[tuple[str, str]]] = {
    "34": [
        ("HAD Montpellier Métropole", "Montpellier"),
        ("HAD du Biterrois", "Béziers"),
        ("HAD du Bassin de Thau", "Sète"),
        ("HAD Est Hérault – Pays de Lunel", "Lunel"),
        ("HAD Cœur d'Hérault", "Clermont-l'Hérault"),
    ],
    "31": [
        ("HAD Toulouse Métropole", "Toulouse"),
        ("HAD Toulouse Ouest – Colomiers", "Colomiers"),
        ("HAD du Muretain", "Muret"),
        ("HAD du Lauragais", "Villefranche-de-Lauragais"),
        ("HAD du Comminges", "Saint-Gaudens"),
    ],
}

EHPAD_NAMES = (
    "Les Oliviers", "Les Tilleuls", "Le Jardin des Garrigues", "La Résidence du Canal", "Les Glycines",
    "Le Clos des Vignes", "Saint-Roch", "Les Magnolias", "Le Val d'Or", "Les Cèdres", "Les Platanes",
    "La Roseraie",
)
CLINIC_NAMES = ("Clinique du Parc", "Clinique Saint-Jean", "Polyclinique des Trois Rivières", "Clinique de l'Occitanie")


def fictional_finess(department: str, kind: str, seq: int) -> str:
    """A valid, clearly fictional FINESS: department prefix, '9' fiction marker, a kind digit
    (0 HAD, 1 hospital, 2 EHPAD, 3 GP practice), a sequence, the check key (reflexe_common.finess)."""
    head = f"{department}9{KIND_DIGIT[kind]}"
    width = 8 - len(head)
    body = f"{head}{seq:0{width}d}"
    if len(body) != 8:
        raise ValueError(f"sequence {seq} does not fit a FINESS for department {department}")
    return with_key(body)


@dataclass(frozen=True)
class HadSpec:
    finess: str
    name: str
    department: str
    anchor_commune: str
    mentions: tuple[str, ...]
    mpp_supported: tuple[str, ...]
    equipment: tuple[str, ...]
    zone_communes: tuple[str, ...]
    ehpad_conventions: tuple[str, ...]
    authorised_places: int
    initial_occupancy: float  # share of authorised places taken by patients at the start
    stale_prone: bool  # lets its capacity declaration go stale
    pushes_on_change: bool  # its information system declares after every admission/discharge

    def registry_body(self) -> dict[str, Any]:
        """The body of ``PUT /v1/hads/{finess}`` (capacity service ``HadIn``)."""
        slug = re.sub(r"[^a-z0-9]+", "-", self.name.lower().encode("ascii", "ignore").decode()).strip("-")
        return {
            "name": self.name,
            "departments": [self.department],
            "mentions": list(self.mentions),
            "mpp_supported": list(self.mpp_supported),
            "equipment": list(self.equipment),
            "zone_communes": list(self.zone_communes),
            "ehpad_conventions": list(self.ehpad_conventions),
            "authorised_places": self.authorised_places,
            "email": f"coordination@{slug}.example",
        }


@dataclass(frozen=True)
class SourceSpec:
    """A referring establishment: a hospital (ED, UHCD, wards), an EHPAD or a GP practice."""

    finess: str
    name: str
    kind: str  # HOSPITAL, EHPAD, GP
    department: str
    commune: str
    source_kinds: tuple[str, ...]  # the SourceKind values it sends referrals as


@dataclass(frozen=True)
class DepartmentScenario:
    code: str
    name: str
    population: int
    hads: tuple[HadSpec, ...]
    hospitals: tuple[SourceSpec, ...]
    ehpads: tuple[SourceSpec, ...]
    gps: tuple[SourceSpec, ...]
    communes: tuple[tuple[str, int], ...]  # (INSEE code, population), sorted by code

    def sources_of_kind(self, kind: SourceKind | str) -> list[SourceSpec]:
        kind = str(kind)
        return [s for s in (*self.hospitals, *self.ehpads, *self.gps) if kind in s.source_kinds]

    def had(self, finess: str) -> HadSpec | None:
        return next((h for h in self.hads if h.finess == finess), None)


@dataclass(frozen=True)
class Scenario:
    seed: int
    departments: dict[str, DepartmentScenario] = field(default_factory=dict)

    @property
    def hads(self) -> list[HadSpec]:
        return [h for d in self.departments.values() for h in d.hads]

    def had(self, finess: str) -> HadSpec | None:
        return next((h for h in self.hads if h.finess == finess), None)

    def summary(self) -> dict[str, Any]:
        return {
            "seed": self.seed,
            "departments": {
                code: {
                    "name": d.name, "population": d.population, "communes": len(d.communes),
                    "hads": [{"finess": h.finess, "name": h.name, "places": h.authorised_places,
                              "mentions": list(h.mentions), "communes": len(h.zone_communes),
                              "ehpad_conventions": len(h.ehpad_conventions), "stale_prone": h.stale_prone}
                             for h in d.hads],
                    "hospitals": [{"finess": s.finess, "name": s.name} for s in d.hospitals],
                    "ehpads": [{"finess": s.finess, "name": s.name, "commune": s.commune} for s in d.ehpads],
                    "gps": [{"finess": s.finess, "name": s.name} for s in d.gps],
                }
                for code, d in self.departments.items()
            },
        }


def _pop(c: Commune) -> int:
    return c.population or 0


def _had_count(population: int) -> int:
    return 3 + (population > 800_000) + (population > 1_300_000)


def _anchors(geo: Geography, code: str, communes: list[Commune], n: int) -> list[tuple[str, Commune]]:
    by_pop = sorted(communes, key=lambda c: (-_pop(c), c.insee_code))
    by_name = {c.name: c for c in communes}
    chosen: list[tuple[str, Commune]] = []
    for name, town in CURATED_HADS.get(code, []):
        if town in by_name and len(chosen) < n:
            chosen.append((name, by_name[town]))
    used = {c.insee_code for _, c in chosen}
    for c in by_pop:
        if len(chosen) >= n:
            break
        if c.insee_code in used:
            continue
        if not chosen:
            label = f"HAD {c.name} Métropole" if _pop(c) > 150_000 else f"HAD {c.name} Agglomération"
        else:
            label = f"HAD du Pays de {c.name}"
        chosen.append((label, c))
        used.add(c.insee_code)
    return chosen


def build_department(geo: Geography, code: str, seed: int) -> DepartmentScenario:
    department = geo.department(code)
    if department is None:
        raise ValueError(f"unknown department {code!r}")
    communes = geo.communes_of_department(code)
    if not communes:
        raise ValueError(f"department {code} has no communes in the geography")
    rng = random.Random(f"reflexe-simulator:{seed}:{code}")
    by_pop = sorted(communes, key=lambda c: (-_pop(c), c.insee_code))
    n = min(_had_count(department.population), len(communes))
    anchors = _anchors(geo, code, communes, n)
    prefecture = by_pop[0]

    # Sizes: the prefecture's HAD is the largest.
    places = [rng.randint(80, 120) if i == 0 else rng.randint(20, 70) for i in range(n)]

    # Partition: anchors first, then the rest by decreasing population to the least-served HAD.
    zones: list[set[str]] = [{a.insee_code} for _, a in anchors]
    served = [float(_pop(a)) for _, a in anchors]
    anchor_codes = {a.insee_code for _, a in anchors}
    for c in by_pop:
        if c.insee_code in anchor_codes:
            continue
        load = [served[i] / places[i] * rng.uniform(0.9, 1.1) for i in range(n)]
        i = min(range(n), key=lambda k: (load[k], k))
        zones[i].add(c.insee_code)
        served[i] += max(_pop(c), 1)
    # Overlap around the prefecture: its 12 most populous communes are also served by 1–2 others.
    around = [c.insee_code for c in by_pop if c.insee_code in zones[0]][:12]
    others = list(range(1, n))
    for insee in around:
        for i in rng.sample(others, k=min(len(others), rng.choice((1, 1, 2)))):
            zones[i].add(insee)

    # Mentions: all SOCLE; one réadaptation per department; the prefecture's HAD (the most
    # populous zone) is the perinatal one (ante et post-partum and children under 3, as the HAD
    # of a maternity network), so that maternity cases (MPP 19/21) and young children (MPP 22,
    # or any MPP before 3) find an HAD.
    readaptation = rng.randrange(min(2, n))
    rng.random()  # drawn as before, so that the rest of a seed's scenario stays the same
    perinatal = 0

    # Referring establishments.
    towns = by_pop[: max(4, n)]
    n_hospitals = 2 + (department.population > 600_000) + (department.population > 1_300_000)
    hospitals = []
    for i in range(n_hospitals):
        town = towns[i % len(towns)]
        if i == 0 and _pop(town) > 250_000:
            name = f"CHU de {town.name} – urgences"
        elif i < len(towns) and i < 3:
            name = f"Centre hospitalier de {town.name} – urgences"
        else:
            name = f"{CLINIC_NAMES[i % len(CLINIC_NAMES)]} ({town.name}) – urgences"
        hospitals.append(SourceSpec(fictional_finess(code, "HOSPITAL", i + 1), name, "HOSPITAL", code, town.insee_code,
                                    (str(SourceKind.ED), str(SourceKind.UHCD), str(SourceKind.WARD))))
    big_enough = [c for c in communes if _pop(c) >= 2000] or communes
    weights = [_pop(c) or 1 for c in big_enough]
    ehpads = []
    names = list(EHPAD_NAMES)
    rng.shuffle(names)
    for i in range(rng.randint(5, 8)):
        town = rng.choices(big_enough, weights=weights)[0]
        ehpads.append(SourceSpec(fictional_finess(code, "EHPAD", i + 1), f"EHPAD {names[i % len(names)]} ({town.name})",
                                 "EHPAD", code, town.insee_code, (str(SourceKind.EHPAD),)))
    gps = []
    for i in range(rng.randint(3, 5)):
        town = rng.choices(big_enough, weights=weights)[0]
        gps.append(SourceSpec(fictional_finess(code, "GP", i + 1), f"Maison de santé pluriprofessionnelle de {town.name}",
                              "GP", code, town.insee_code, (str(SourceKind.GP),)))

    hads = []
    stale_index = rng.randrange(n) if rng.random() < 0.7 else None
    for i, (name, anchor) in enumerate(anchors):
        mentions = [str(Mention.SOCLE)]
        mpp = set(COMMON_MPP) if rng.random() < 0.9 else set(COMMON_MPP) - {rng.choice(("07", "09", "14"))}
        mpp |= {code_ for code_, p in sorted(OPTIONAL_MPP.items()) if rng.random() < p}
        if i == readaptation:
            mentions.append(str(Mention.READAPTATION))
            mpp |= {"11", "12"}
        if i == perinatal:
            mentions += [str(Mention.ANTE_POST_PARTUM), str(Mention.ENFANTS_MOINS_3_ANS)]
            mpp |= {"19", "21", "22"}
        equipment = {Equipment.SYRINGE_DRIVER, Equipment.OXYGEN}
        if rng.random() < 0.85:
            equipment.add(Equipment.PCA_PUMP)
        if rng.random() < 0.6:
            equipment.add(Equipment.MEOPA)
        if rng.random() < 0.8:
            equipment.add(Equipment.ISOLATION)
        if "02" in mpp:
            equipment.add(Equipment.PARENTERAL_NUTRITION)
        if "18" in mpp:
            equipment.add(Equipment.TRANSFUSION)
        in_zone = [e.finess for e in ehpads if e.commune in zones[i]]
        conventions = [f for f in in_zone if rng.random() < 0.7] or in_zone[:1]
        hads.append(HadSpec(
            finess=fictional_finess(code, "HAD", i + 1), name=name, department=code, anchor_commune=anchor.insee_code,
            mentions=tuple(mentions), mpp_supported=tuple(sorted(mpp)), equipment=tuple(sorted(str(e) for e in equipment)),
            zone_communes=tuple(sorted(zones[i])), ehpad_conventions=tuple(sorted(conventions)),
            authorised_places=places[i], initial_occupancy=round(rng.uniform(0.78, 0.95), 3),
            stale_prone=(i == stale_index), pushes_on_change=rng.random() < 0.5,
        ))
    return DepartmentScenario(
        code=code, name=department.name, population=department.population, hads=tuple(hads),
        hospitals=tuple(hospitals), ehpads=tuple(ehpads), gps=tuple(gps),
        communes=tuple((c.insee_code, _pop(c)) for c in communes),
    )


def build_scenario(departments: list[str] | tuple[str, ...], seed: int = 1, geo: Geography | None = None) -> Scenario:
    geo = geo or Geography.load()
    return Scenario(seed=seed, departments={code: build_department(geo, code, seed) for code in departments})
