"""Réflexe capacity service: HAD registry, live capacity ledger and referral matching."""
