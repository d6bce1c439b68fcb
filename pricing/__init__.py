"""The catalog (meters, plans, plan versions, charges) and rating."""
