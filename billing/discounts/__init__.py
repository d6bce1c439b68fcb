"""Discounts: coupons (their codes, redemptions and SQL) and the pure arithmetic of what each discount
takes off an invoice. Below invoicing, which applies them."""
