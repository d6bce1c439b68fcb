"""Collection: getting invoices paid through Stripe. The gateway, Stripe customers and saved cards,
the collection outbox the worker drains, what Stripe's answers do (payment outcomes, refunds,
disputes), dunning, the refund outbox, Stripe's webhooks in, and what finance does with an unpaid
invoice."""
