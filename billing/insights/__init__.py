"""Insights: what billing watches and reports. Anomalies (the detectors over usage and money, invoice
accuracy; listing, acknowledging, resolving), customers' usage alerts, the finance overview, the
operational gauges and a customer's ledger statement. Reads every layer below it; nothing in
billing imports it."""
