"""Prepaid credits as billing sells and watches them: top-ups (bought on an invoice, granted when
paid), the balance's low alert and auto-recharge, and spend authorizations checked against the
balance and the upcoming invoice."""
