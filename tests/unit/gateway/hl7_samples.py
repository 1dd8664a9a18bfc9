"""IHE PAM FR shaped ADT messages (HL7 v2.5, MSH-12 2.5^FRA^2.11, ZBE, PID-3 with a local PI
and an INS) for the gateway's tests. Names, NIR and birth dates are fictional but shaped like
real ones, so the privacy assertions would catch them if they leaked."""

from __future__ import annotations

import uuid

SURNAME, GIVEN = "ZORGLUBIAN", "MARCELINE"
NIR = "2440334172005"  # shaped like a NIR (INS-NIR in PID-3, type INS)
BIRTH_DATE = "19440312"
STREET = "12 RUE DES TILLEULS"
AUTHORITY_OID = "1.2.250.1.71.4.2.7"


def adt(trigger: str, finess: str, patient_id: str, *, control_id: str | None = None, patient_class: str = "E",
        disposition: str = "", movement_id: str | None = None, action: str = "INSERT",
        event_time: str = "20261126092900", preadmit: str = "", death: str = "") -> str:
    control_id = control_id or uuid.uuid4().hex[:20]
    movement_id = movement_id or f"MVT{uuid.uuid4().hex[:10]}"
    structure = {"A01": "ADT_A01", "A03": "ADT_A03", "A06": "ADT_A06", "A11": "ADT_A09", "A13": "ADT_A01"}.get(trigger, "ADT_A01")
    pv1 = ["PV1", "1", patient_class] + [""] * 2 + [preadmit] + [""] * 30 + [disposition]
    segments = [
        f"MSH|^~\\&|SIH_CHU|{finess}^^FINESS|REFLEXE|REFLEXE|20261126093000||ADT^{trigger}^{structure}|{control_id}|P|"
        f"2.5^FRA^2.11|||||FRA|8859/1",
        f"EVN||{event_time}|||U001^DUPONT^CLAIRE|{event_time}",
        f"PID|1||{patient_id}^^^CHU-MTP&{AUTHORITY_OID}&ISO^PI~{NIR}^^^ASIP-SANTE-INS-NIR&1.2.250.1.213.1.4.8&ISO^INS||"
        f"{SURNAME}^{GIVEN}^^^MME^^L||{BIRTH_DATE}|F|||{STREET}^^MONTPELLIER^^34000^FRA^H" + "|" * 19 + f"{death}",
        "|".join(pv1),
        f"ZBE|{movement_id}^CHU-MTP|{event_time}||{action}|N",
    ]
    return "\r".join(segments) + "\r"
