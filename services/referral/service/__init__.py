"""referral's use cases, one class per aggregate, each public method one transaction:

- ``referrals.Referrals``: a referral's life -- create (guards, consent), read, move, cancel, flag overdue;
- ``subscriptions.Subscriptions``: an agency's webhook subscriptions;
- ``feed.Feed``: the pull feed of an agency's referral events;
- ``statistics.Statistics``: de-identified indicators for oversight agencies;
- ``suggestions.Suggestions``: registry services ranked for a need.

``texts`` seals and opens free text, ``views`` shapes the answers, ``clock`` is the injectable time.
"""

from __future__ import annotations

from services.referral.service.clock import Clock, field_problem, system_clock
from services.referral.service.feed import Feed, WaitingPolls
from services.referral.service.referrals import NewReferralRequest, Referrals
from services.referral.service.statistics import Statistics
from services.referral.service.subscriptions import Subscriptions
from services.referral.service.suggestions import Suggestions
from services.referral.service.texts import FreeTexts, known_consent
from services.referral.service.views import FreeTextView, party_of, referral_view

__all__ = [
    "Clock",
    "Feed",
    "FreeTextView",
    "FreeTexts",
    "NewReferralRequest",
    "Referrals",
    "Statistics",
    "Subscriptions",
    "Suggestions",
    "WaitingPolls",
    "field_problem",
    "known_consent",
    "party_of",
    "referral_view",
    "system_clock",
]
