"""Réflexe notify: signed webhooks (Standard Webhooks) to HADs, desks and hospitals."""
