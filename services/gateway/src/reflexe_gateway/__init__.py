"""HL7 v2.5 (IHE PAM FR) gateway: MLLP in, pseudonymised patient events to the referral service."""
