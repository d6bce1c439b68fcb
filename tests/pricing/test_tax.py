"""The tax arithmetic and rules (pricing.tax), without a database: published examples to the cent,
rounding once per rate and invoice, and properties that hold for any lines and rates."""

from __future__ import annotations

from decimal import Decimal

from hypothesis import given
from hypothesis import strategies as st

from pricing.tax import (
    REVERSE_CHARGE_KEY,
    TaxBuyer,
    TaxRate,
    TaxTreatment,
    allocate,
    catalog_taxes,
    exclusive_tax,
    inclusive_tax,
    tax_lines,
    treatment,
)

UK_VAT = TaxRate("uk-vat", "VAT", Decimal(20), False, "GB")
UK_VAT_INCLUDED = TaxRate("uk-vat-incl", "VAT", Decimal(20), True, "GB")
UK_REDUCED_INCLUDED = TaxRate("uk-reduced-incl", "VAT", Decimal(5), True, "GB")
GST = TaxRate("ca-gst", "GST", Decimal(5), False, "CA")
QST = TaxRate("ca-qc-qst", "QST", Decimal("9.975"), False, "CA", "QC")
FR_VAT = TaxRate("fr-vat", "TVA", Decimal(20), False, "FR")
DE_VAT = TaxRate("de-vat", "MwSt", Decimal(19), False, "DE")
CATALOG = (UK_VAT, GST, QST, FR_VAT, DE_VAT)


def buyer(country: str | None, region: str | None = None, **changes: object) -> TaxBuyer:
    fields: dict[str, object] = {"country": country, "region": region, "tax_id": None, "tax_exemption": "none"}
    return TaxBuyer(**{**fields, **changes})  # type: ignore[arg-type]


def one(rate: TaxRate, *amounts: int, currency: str = "GBP") -> tuple[int, int]:
    [line] = tax_lines(list(amounts), TaxTreatment((rate,)), currency)
    return line.taxable, line.tax


def test_hmrc_exclusive_examples_standard_and_reduced_rate() -> None:
    """HMRC, "Calculating VAT for VAT-inclusive and VAT-exclusive prices": £100 at the standard rate
    of 20 % owes £20 (£120 with VAT); at the reduced rate of 5 %, £5 (£105)."""
    assert one(UK_VAT, 100_00) == (100_00, 20_00)
    reduced = TaxRate("uk-reduced", "VAT", Decimal(5), False, "GB")
    assert one(reduced, 100_00) == (100_00, 5_00)
    lines = tax_lines([100_00], TaxTreatment((UK_VAT,)), "GBP")
    assert 100_00 + exclusive_tax(lines) == 120_00


def test_hmrc_vat_fraction_examples_for_inclusive_prices() -> None:
    """The VAT fraction (HMRC; accountingservicesforbusiness.co.uk "VAT rates and fractions";
    itsrelative.co.uk "VAT fraction"): £120 including 20 % VAT holds £20 (1/6); £60 of petrol
    holds £10.00; £80 at the reduced 5 % holds £3.81 (1/21). The total does not change."""
    assert one(UK_VAT_INCLUDED, 120_00) == (100_00, 20_00)
    assert one(UK_VAT_INCLUDED, 60_00) == (50_00, 10_00)
    assert one(UK_REDUCED_INCLUDED, 80_00) == (76_19, 3_81)
    assert exclusive_tax(tax_lines([80_00], TaxTreatment((UK_REDUCED_INCLUDED,)), "GBP")) == 0


def test_stripe_inclusive_and_exclusive_ten_percent_on_600_euros() -> None:
    """Stripe support, "Inclusive and exclusive tax options in the tax rate API and Stripe Tax": a
    €600 price with an inclusive 10 % rate totals €600; with an exclusive 10 % rate, €660. The
    inclusive tax in €600 is 600 − 600/1.1 = €54.55."""
    inclusive = TaxRate("ten-incl", "VAT", Decimal(10), True, "FR")
    exclusive = TaxRate("ten", "VAT", Decimal(10), False, "FR")
    incl_lines = tax_lines([600_00], TaxTreatment((inclusive,)), "EUR")
    excl_lines = tax_lines([600_00], TaxTreatment((exclusive,)), "EUR")
    assert 600_00 + exclusive_tax(incl_lines) == 600_00
    assert inclusive_tax(incl_lines) == 54_55
    assert 600_00 + exclusive_tax(excl_lines) == 660_00


def test_stripe_sales_tax_of_8_5_percent() -> None:
    """Stripe's Tax Rates guide creates a "Sales Tax" of 8.5 %, exclusive (SF): $100.00 owes $8.50,
    and $19.99 owes $1.70 (1.69915, rounded half away from zero)."""
    sales = TaxRate("sf", "Sales Tax", Decimal("8.5"), False, "US", "CA")
    assert one(sales, 100_00, currency="USD") == (100_00, 8_50)
    assert one(sales, 19_99, currency="USD") == (19_99, 1_70)


def test_several_rates_on_one_invoice_quebec_gst_and_qst() -> None:
    """Revenu Québec: GST at 5 % and QST at 9.975 %, each on the selling price (not compounded).
    $100.00 owes $5.00 of GST and $9.98 of QST (9.975): $114.98 in all; a Québec address gets both,
    an Ontario one only the GST (the QST names the QC region)."""
    lines = catalog_taxes([60_00, 40_00], "CAD", CATALOG, buyer("CA", "QC"), None)
    assert [(line.name, line.taxable, line.tax) for line in lines] == [("GST", 100_00, 5_00), ("QST", 100_00, 9_98)]
    assert 100_00 + exclusive_tax(lines) == 114_98
    assert [line.name for line in catalog_taxes([100_00], "CAD", CATALOG, buyer("CA", "ON"), None)] == ["GST"]


def test_tax_is_rounded_once_per_rate_not_per_line() -> None:
    """Three lines of 0.10 at 5 %: 0.015 of tax, rounded once to 0.02. Rounding each line's 0.005
    first would owe 0.03 (half away from zero), a cent more."""
    five = TaxRate("five", "VAT", Decimal(5), False, "GB")
    assert one(five, 10, 10, 10) == (30, 2)
    per_line = sum(one(five, 10)[1] for _ in range(3))
    assert per_line == 3


def test_reverse_charge_by_exemption_and_automatically_for_eu_b2b() -> None:
    """EU VAT Directive 2006/112/EC, Article 196 and 226(11a): a supply of services to a taxable
    person in another member state is invoiced without VAT, with the mention "Reverse charge"."""
    french_business = buyer("FR", tax_id="FR40303265045")
    [line] = catalog_taxes([1000_00], "EUR", CATALOG, french_business, "DE")
    assert (line.rate_key, line.tax, line.taxable, line.reverse_charge) == (REVERSE_CHARGE_KEY, 0, 1000_00, True)
    # The same business bought from France (domestic), or without a tax id (a consumer): French VAT.
    assert [line.tax for line in catalog_taxes([1000_00], "EUR", CATALOG, french_business, "FR")] == [200_00]
    assert [line.tax for line in catalog_taxes([1000_00], "EUR", CATALOG, buyer("FR"), "DE")] == [200_00]
    # Sold from outside the EU: no automatic reverse charge; by exemption: always.
    assert [line.tax for line in catalog_taxes([1000_00], "EUR", CATALOG, french_business, "US")] == [200_00]
    by_exemption = buyer("FR", tax_exemption="reverse_charge")
    assert [line.reverse_charge for line in catalog_taxes([1000_00], "EUR", CATALOG, by_exemption, None)] == [True]


def test_exempt_customers_pay_no_tax_and_assigned_rates_win_over_the_address() -> None:
    assert catalog_taxes([1000_00], "EUR", CATALOG, buyer("FR", tax_exemption="exempt"), "FR") == []
    assigned = buyer("FR", assigned=("de-vat",))
    assert [line.rate_key for line in catalog_taxes([1000_00], "EUR", CATALOG, assigned, "FR")] == ["de-vat"]
    assert treatment(CATALOG, buyer(None), "FR") == TaxTreatment(())  # no address, no assignment: no rate
    assert treatment(CATALOG, buyer("JP"), "FR") == TaxTreatment(())  # no rate declared for the country


amounts = st.lists(st.integers(min_value=-(10**9), max_value=10**12), min_size=0, max_size=20)
rates = st.decimals(min_value=0, max_value=Decimal("99.9999"), places=4, allow_nan=False, allow_infinity=False)


@given(amounts, rates)
def test_exclusive_tax_is_the_rate_of_the_sum_rounded_once(line_amounts: list[int], rate: Decimal) -> None:
    [line] = tax_lines(line_amounts, TaxTreatment((TaxRate("r", "Tax", rate, False, "FR"),)), "EUR")
    exact = Decimal(sum(line_amounts)) * rate / 100  # in cents
    assert line.taxable == sum(line_amounts)
    assert abs(line.tax - exact) <= Decimal("0.5")


@given(amounts, rates)
def test_inclusive_tax_splits_the_gross_into_net_and_tax(line_amounts: list[int], rate: Decimal) -> None:
    [line] = tax_lines(line_amounts, TaxTreatment((TaxRate("r", "Tax", rate, True, "FR"),)), "EUR")
    gross = sum(line_amounts)
    assert line.taxable + line.tax == gross
    exact = Decimal(gross) - Decimal(gross) / (1 + rate / 100)
    assert abs(line.tax - exact) <= Decimal("0.5")
    # Adding the rate back to the net gives the gross again within the one rounding.
    assert abs(Decimal(line.taxable) * (1 + rate / 100) - gross) <= Decimal("0.5") * (1 + rate / 100)


@given(st.integers(min_value=-(10**12), max_value=10**12), st.lists(st.integers(-(10**9), 10**9), max_size=6))
def test_allocate_splits_to_the_unit_in_proportion(amount: int, weights: list[int]) -> None:
    shares = allocate(amount, weights)
    assert len(shares) == len(weights)
    if weights:
        assert sum(shares) == amount
    base = sum(weights)
    if base:
        for share, weight in zip(shares, weights, strict=True):
            assert abs(Decimal(share) - Decimal(amount) * weight / base) < 1
