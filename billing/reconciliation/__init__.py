"""Reconciliation: the ledger's payments and refunds checked daily against Stripe, each difference
recorded once with both sides until someone resolves it."""
