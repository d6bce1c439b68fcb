"""Invoices: the billing run and what it bills (base fees in advance, usage, one-off charges,
commitments, minimum spend, taxes, price overrides, plan changes, threshold invoices), credit
notes, invoice numbers' events and search, why a line has its amount (provenance), and billing-run
failures. service.py is what the rest of Tally calls to issue and read invoices."""
