"""HL7 acknowledgements (original mode): MSH, MSA and, for AE/AR, an ERR naming the field.

Built as text with the standard separators: the received header's values were cleaned of every
separator by hl7.read_header, so an ACK is well formed whatever the sender wrote. The result is
checked by python-hl7's parser in the unit tests.
"""

from __future__ import annotations

from datetime import UTC, datetime

from .hl7 import ERROR_TEXT, Header

GATEWAY_APPLICATION = "REFLEXE"
GATEWAY_FACILITY = "REFLEXE"


def build_ack(header: Header | None, ack_code: str, control_id: str, now: datetime,
              error: tuple[str, str, str] | None = None) -> str:
    """ack_code AA/AE/AR; control_id: this ACK's own MSH-10; error: (HL7 0357 code, ERR-2
    location such as "PID^1^3", text)."""
    h = header
    trigger = h.trigger if h else ""
    stamp = now.astimezone(UTC).strftime("%Y%m%d%H%M%S+0000")
    msh = "|".join([
        "MSH", "^~\\&", GATEWAY_APPLICATION, GATEWAY_FACILITY,
        h.sending_application if h else "", h.sending_facility if h else "",
        stamp, "", f"ACK^{trigger}^ACK" if trigger else "ACK", control_id,
        (h.processing_id if h and h.processing_id else "P"), "2.5^FRA^2.11",
    ])
    msa = "|".join(["MSA", ack_code, h.control_id if h else ""])
    segments = [msh, msa]
    if error is not None:
        code, location, text = error
        # ERR-2 location (ERL), ERR-3 code (CWE, table 0357), ERR-4 severity E, ERR-8 user message.
        safe = "".join(c for c in text if c not in "|^~\\&\r\n")[:200]
        segments.append("|".join(["ERR", "", location, f"{code}^{ERROR_TEXT.get(code, 'Error')}^HL70357",
                                  "E", "", "", "", safe]))
    return "\r".join(segments) + "\r"
