"""Réflexe referral service: receives referrals and runs their lifecycle."""
