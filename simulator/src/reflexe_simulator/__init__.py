"""Réflexe simulator: a realistic, time-accelerated day of referrals, HAD answers and desk
actions, played only through the platform's public HTTP APIs and webhooks.

Modules: ``scenario`` (establishments, zones), ``traffic`` (daily profiles, referral bodies),
``actors`` (HAD and desk behaviour, clock, counters), ``client`` (API calls with tokens),
``webhooks`` (receiver and Standard Webhooks verification), ``__main__`` (CLI).
Everything generated is fictional: FINESS numbers, names of establishments, pseudonyms.
"""

__version__ = "0.1.0"
