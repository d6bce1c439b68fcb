"""Billing: the billing run, invoices, Stripe, dunning, reconciliation, anomalies."""
