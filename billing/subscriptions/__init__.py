"""What a subscription's requests bill: a cancel, a pause or an unpause (lifecycle) and a change to
a trial. Above invoices, which they issue through."""
