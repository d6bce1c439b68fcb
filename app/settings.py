"""Tally's one settings class: every environment variable Tally reads is declared here."""

from __future__ import annotations

import secrets
from decimal import Decimal
from functools import cached_property
from pathlib import Path
from typing import Literal

from pydantic import AliasChoices, Field, SecretStr, field_validator, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

from billing.invoices.taxation import TaxPolicy


class Settings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="TALLY_", extra="ignore")

    database_url: str | None = Field(
        default=None,
        validation_alias=AliasChoices("DATABASE_URL", "TALLY_DATABASE_URL"),
        description="Any PostgreSQL 14+; unset starts an embedded PostgreSQL under the data dir.",
    )
    data_dir: Path = Field(default=Path(".tally"), description="Embedded PostgreSQL data and secrets.")
    env: Literal["development", "test", "production"] = "production"
    secret_key: str | None = Field(
        default=None, description="Signs console sessions; generated once under the data dir if unset."
    )
    span_retention_hours: int = Field(default=24, ge=1)
    tracing: bool = Field(default=True, description="Record spans (OTLP or the PostgreSQL span store).")
    otlp_endpoint: str | None = Field(
        default=None,
        validation_alias=AliasChoices("OTEL_EXPORTER_OTLP_ENDPOINT"),
    )
    login_max_failures: int = Field(default=5, ge=1)
    login_lockout_seconds: int = Field(default=900, ge=1)
    login_rate_per_address: str = Field(
        default="10/minute",
        description="Sign-in attempts one client address may make (an IPv6 address counts as its /64), in the "
        "`limits` notation (e.g. 10/minute); more are answered 429 before any password is checked.",
    )
    login_rate_per_email: str = Field(
        default="10/minute",
        description="Sign-in attempts for one email, whether a user has it or not; more are answered 429.",
    )
    login_refusal_delay_seconds: float = Field(
        default=1.0,
        ge=0,
        le=10,
        description="A sign-in refused for its address's rate is answered after this long (at most 256 wait at "
        "once per process), so a flooding client waits rather than the server working.",
    )
    password_check_concurrency: int = Field(
        default=1,
        ge=1,
        le=64,
        description="Sign-ins a server process checks at once (argon2, in worker threads, each check using up to "
        "4 cores); more wait their turn.",
    )
    cookie_secure: bool = Field(default=False, description="Send console cookies over HTTPS only.")
    session_max_age_seconds: int = Field(default=12 * 3600, ge=60)
    graphql_max_depth: int = Field(default=12, ge=2)
    graphql_max_tokens: int = Field(default=3000, ge=100)
    graphql_max_aliases: int = Field(default=30, ge=1)
    page_size_max: int = Field(default=100, ge=1)
    support_grant_limit: Decimal = Field(
        default=Decimal(100), gt=0, description="Largest credit grant the support role may make, in major units."
    )
    amount_in_words_above: Decimal = Field(
        default=Decimal(10_000),
        ge=0,
        description="The console's confirmations also state amounts above this (in major units) in words.",
    )
    event_max_age_days: int = Field(default=35, ge=1, description="Older events are TIMESTAMP_OUT_OF_RANGE.")
    events_max_body_bytes: int = Field(default=10 * 1024 * 1024, ge=1024, description="Larger bodies get 413.")
    events_max_per_request: int = Field(default=10_000, ge=1, description="More events in one request get 413.")
    max_body_bytes: int = Field(
        default=64 * 1024,
        ge=1024,
        description="Largest request body of any endpoint without a limit of its own (the console's forms); "
        "larger bodies get 413 before they are read.",
    )
    graphql_max_body_bytes: int = Field(default=1024 * 1024, ge=1024, description="POST /graphql; larger get 413.")
    webhook_max_body_bytes: int = Field(
        default=512 * 1024, ge=1024, description="POST /webhooks/stripe; larger get 413."
    )
    login_max_body_bytes: int = Field(default=8 * 1024, ge=1024, description="POST /console/login; larger get 413.")
    body_read_timeout_seconds: float = Field(
        default=30.0,
        gt=0,
        description="A request body not received whole by then gets 408 (slow uploads hold no database connection: "
        "bodies are read before a request is handled).",
    )
    request_timeout_seconds: float = Field(
        default=60.0,
        gt=0,
        description="A request not answered by then (body read excluded) gets a JSON 503 REQUEST_TIMEOUT.",
    )
    statement_timeout_seconds: float = Field(
        default=30.0,
        gt=0,
        description="PostgreSQL's statement_timeout on the connections that serve requests.",
    )
    idle_in_transaction_timeout_seconds: float = Field(
        default=60.0,
        gt=0,
        description="PostgreSQL's idle_in_transaction_session_timeout on every connection of `tally serve`.",
    )
    jobs_statement_timeout_seconds: float = Field(
        default=600.0,
        gt=0,
        description="statement_timeout on the connections of `tally serve`'s background jobs (the billing run).",
    )
    database_connect_timeout_seconds: int = Field(
        default=5, ge=2, description="How long opening a database connection may take (libpq's connect_timeout)."
    )
    ingest_concurrency: int = Field(
        default=2,
        ge=1,
        le=64,
        description="Batches a server process writes at once; more wait their turn.",
    )
    rollup_interval_seconds: float = Field(
        default=0.5,
        gt=0,
        le=60,
        description="How often the roller folds counted usage into the rollups (reads include what waits).",
    )
    event_properties_max_bytes: int = Field(default=16 * 1024, ge=64, description="PROPERTIES_TOO_LARGE past it.")
    backdate_max_days: int = Field(
        default=35,
        ge=0,
        le=3660,
        description="How far in the past a subscription may start or a plan change take effect (a start "
        "in 1800 would issue centuries of invoices).",
    )
    start_ahead_max_days: int = Field(
        default=366, ge=0, le=3660, description="How far in the future a subscription may start."
    )
    event_properties_max_depth: int = Field(
        default=32,
        ge=1,
        le=256,
        description="Properties nested deeper (objects and arrays in one another) are PROPERTIES_TOO_DEEP.",
    )
    quantity_max: Decimal = Field(
        default=Decimal(10) ** 15,
        gt=0,
        le=Decimal(10) ** 30,
        description="The largest magnitude of a value a meter reads from an event; larger ones are INVALID_VALUE.",
    )
    quantity_max_places: int = Field(
        default=12,
        ge=0,
        le=30,
        description="The most decimal places of a value a meter reads from an event; more are INVALID_VALUE.",
    )
    billing_grace_minutes: int = Field(
        default=60, ge=0, description="A period is invoiced this long after it ends, so late events still count."
    )
    trial_without_payment_method: Literal["cancel", "past_due"] = Field(
        default="cancel",
        description="When a trial of a plan with trial_requires_payment_method ends and no payment method is on "
        "file: cancel (the subscription ends with the trial, nothing more is billed, entitlements answer no) or "
        "past_due (the first paid period is billed and the customer is PAST_DUE).",
    )
    stripe_api_key: str | None = Field(
        default=None,
        validation_alias=AliasChoices("STRIPE_API_KEY", "TALLY_STRIPE_API_KEY"),
        description="A Stripe secret key; unset turns collection off (invoices say they are not collected).",
    )
    stripe_api_base: str | None = Field(
        default=None,
        validation_alias=AliasChoices("STRIPE_API_BASE", "TALLY_STRIPE_API_BASE"),
        description="Stripe's API address, e.g. a localstripe at http://localhost:8420; unset is Stripe's own.",
    )
    stripe_publishable_key: str | None = Field(
        default=None,
        validation_alias=AliasChoices("STRIPE_PUBLISHABLE_KEY", "TALLY_STRIPE_PUBLISHABLE_KEY"),
        description="pk_...: lets Stripe.js on the hosted invoice page take a payment (no pay button without it).",
    )
    stripe_timeout_seconds: float = Field(default=10.0, gt=0, description="Per Stripe request.")
    stripe_max_network_retries: int = Field(default=2, ge=0, le=10, description="Stripe's own retries.")
    dunning_retry_days: list[int] = Field(
        default=[3, 5, 7], description="Retries of a declined payment, in days after the first failure."
    )
    stripe_webhook_secret: str | None = Field(
        default=None,
        validation_alias=AliasChoices("STRIPE_WEBHOOK_SECRET", "TALLY_STRIPE_WEBHOOK_SECRET"),
        description="The webhook endpoint's signing secret (whsec_…); unset refuses every webhook.",
    )
    billing_concurrency: int = Field(default=2, ge=1, le=32, description="Customers invoiced at once by a run.")
    billing_retry_minutes: int = Field(
        default=15,
        ge=1,
        description="A customer whose invoice could not be issued is tried again after this, doubling each time.",
    )
    billing_retry_max_hours: int = Field(
        default=24, ge=1, description="The longest wait between two tries at a failing customer's invoice."
    )
    stripe_event_retry_minutes: int = Field(
        default=5,
        ge=1,
        description="A Stripe event whose processing raised is tried again after this, doubling each time.",
    )
    stripe_event_max_attempts: int = Field(
        default=8, ge=1, description="Tries at a Stripe event before it stays failed until retried by hand."
    )
    serve_jobs: bool = Field(
        default=True,
        description="Whether `tally serve` runs the background jobs (off for API processes beside one that does).",
    )
    nats_url: str | None = Field(
        default=None,
        description="NATS servers, comma-separated (e.g. nats://127.0.0.1:4222,nats://127.0.0.1:4223): when set, "
        "POST /v1/events publishes to the JetStream event log and consumers count from it (docs/scaling.md).",
    )
    nats_stream: str = Field(
        default="TALLY_EVENTS", pattern=r"^[A-Za-z0-9_-]{1,32}$", description="The JetStream stream of usage events."
    )
    nats_partitions: int = Field(
        default=8, ge=1, le=1024, description="Subjects the events are spread over, by a hash of the customer."
    )
    nats_replicas: int = Field(default=3, ge=1, le=5, description="Copies of the stream the cluster keeps.")
    nats_duplicate_window_seconds: float = Field(
        default=120, gt=0, le=86400, description="How long the stream drops a retried batch's messages by their id."
    )
    nats_publish_timeout_seconds: float = Field(
        default=5, gt=0, le=60, description="How long the edge waits for the log's acknowledgement before a 503."
    )
    nats_ack_wait_seconds: float = Field(
        default=30,
        gt=0,
        le=3600,
        description="A batch a consumer took and did not acknowledge in this time (it died) is delivered again.",
    )
    nats_consume_batch: int = Field(
        default=64, ge=1, le=1024, description="Messages a consumer takes, counts in one transaction and acknowledges."
    )
    nats_consume_linger_ms: int = Field(
        default=50,
        ge=0,
        le=1000,
        description=(
            "How long a consumer that took less than a full batch waits for more before counting it: "
            "fewer, larger transactions when it keeps up, at this cost in freshness."
        ),
    )
    anomaly_scan_minutes: int = Field(default=60, ge=1, description="How often `tally serve` scans for anomalies.")
    anomaly_lookback_days: int = Field(
        default=7, ge=1, le=35, description="Closed periods and invoices a scan looks back over (covers downtime)."
    )
    anomaly_spike_factor: Decimal = Field(
        default=Decimal(3), gt=1, description="USAGE_SPIKE: a day above this many times the trailing 14-day median."
    )
    anomaly_duplicate_factor: Decimal = Field(
        default=Decimal(3), gt=1, description="DUPLICATE_RATE: the last hour's duplicate share over its 7-day baseline."
    )
    anomaly_duplicate_min_events: int = Field(
        default=100, ge=1, description="DUPLICATE_RATE: hours with fewer events from the edge are not judged."
    )
    anomaly_metering_lag_minutes: int = Field(
        default=60, ge=1, description="METERING_LAG: a customer's watermark this far behind what the edge sends."
    )
    anomaly_late_usage_share: Decimal = Field(
        default=Decimal("0.10"), gt=0, le=1, description="LATE_USAGE: late-usage lines above this share of a subtotal."
    )
    invoice_accuracy_sample: int = Field(
        default=50, ge=1, description="Issued invoices re-rated from raw events by each accuracy check."
    )
    payment_terms_days: int = Field(
        default=14, ge=0, le=365, description="An invoice falls due this many days after issue (its due date)."
    )
    seller_legal_name: str = Field(default="Tally", description="Who issues the invoices: the seller's legal name.")
    seller_address: str = Field(
        default="", description="The seller's postal address on invoices; lines separated by newlines."
    )
    seller_tax_id: str = Field(default="", description="The seller's tax id (e.g. VAT number) on invoices.")
    seller_email: str = Field(default="", description="Where buyers write about an invoice.")
    invoice_link_days: int = Field(
        default=30, ge=1, le=365, description="How long a hosted invoice link works unless its creator says otherwise."
    )
    public_base_url: str | None = Field(
        default=None,
        description="The address customers reach Tally at, for hosted invoice links (unset: the request's own).",
    )
    invoice_accuracy_interval_hours: int = Field(default=24, ge=1, description="How often `tally serve` checks.")
    seller_country: str | None = Field(
        default=None,
        description="The seller's country (ISO 3166-1 alpha-2, e.g. FR), on invoices; an EU buyer with a tax id in "
        "another EU country is invoiced under reverse charge. Unset: reverse charge only when a tax exemption says so.",
    )

    @field_validator("seller_country")
    @classmethod
    def _country(cls, value: str | None) -> str | None:
        from pricing.tax import KNOWN_COUNTRIES

        if value is not None and value.strip().upper() not in KNOWN_COUNTRIES:
            raise ValueError("give an ISO 3166-1 alpha-2 country code, e.g. FR")
        return value.strip().upper() if value is not None else None

    @property
    def tax_policy(self) -> TaxPolicy:
        """How invoices are taxed in this process (billing.invoices.taxation is the seam)."""
        return TaxPolicy(seller_country=self.seller_country)

    smtp_host: str | None = Field(
        default=None,
        description="The SMTP server emails are sent through; unset turns email off (messages are still queued, "
        "and sent once a host is set, unless older than TALLY_EMAIL_MAX_AGE_HOURS by then).",
    )
    smtp_port: int = Field(default=587, ge=1, le=65535)
    smtp_tls: Literal["none", "starttls", "tls"] = Field(
        default="starttls",
        description="none (plain, e.g. a local relay), starttls (upgrade after connecting, port 587) or tls "
        "(implicit TLS, port 465).",
    )
    smtp_username: str | None = Field(default=None, description="Unset: no SMTP sign-in.")
    smtp_password: SecretStr | None = Field(default=None, description="Never logged or shown.")
    smtp_timeout_seconds: float = Field(default=30.0, gt=0, le=600, description="Per SMTP connection and command.")
    email_from: str | None = Field(
        default=None, description="The From address of every email, e.g. Billing <billing@example.com>."
    )
    email_interval_seconds: float = Field(
        default=5.0, gt=0, le=3600, description="How often `tally serve` sends the emails that are due."
    )
    email_retry_minutes: int = Field(
        default=1, ge=1, description="An email the server did not take is tried again after this, doubling each time."
    )
    email_retry_max_hours: int = Field(default=6, ge=1, description="The longest wait between two tries of an email.")
    email_max_attempts: int = Field(default=8, ge=1, le=100, description="Tries of an email before it is failed.")
    email_max_age_hours: int = Field(
        default=72, ge=1, description="A queued email not sent by then is skipped rather than sent late."
    )

    webhook_interval_seconds: float = Field(
        default=1.0, gt=0, le=3600, description="How often `tally serve` fans out events and sends due webhooks."
    )
    webhook_retry_schedule_seconds: list[float] = Field(
        default=[5, 30, 120, 600, 3600, 14400, 43200, 86400, 108000],
        description="The waits between tries of a webhook delivery (one fewer than the tries, about three days in "
        "all by default), each with ±10% jitter; failed after the last.",
    )
    webhook_timeout_seconds: float = Field(
        default=10.0, gt=0, le=60, description="A webhook POST with no full answer by then is a failed try."
    )
    webhook_lease_seconds: float = Field(
        default=120.0, gt=0, le=3600, description="A delivery claimed by a sender that died is tried again after this."
    )
    webhook_disable_after_failures: int = Field(
        default=20, ge=1, le=10_000, description="An endpoint failing this many attempts in a row …"
    )
    webhook_retention_days: int = Field(
        default=30,
        ge=1,
        le=3650,
        description="Delivered and failed webhook deliveries, with their attempts, are deleted this many days after "
        "their last attempt (the events themselves are kept).",
    )
    webhook_disable_after_hours: float = Field(
        default=24, ge=0, le=24 * 30, description="… over at least this many hours is disabled (and an anomaly raised)."
    )

    @field_validator("webhook_retry_schedule_seconds")
    @classmethod
    def _retry_waits(cls, value: list[float]) -> list[float]:
        if not 1 <= len(value) <= 50 or any(not 0 < wait <= 7 * 86400 for wait in value):
            raise ValueError("give 1 to 50 waits in seconds, each more than 0 and at most a week")
        return value

    @model_validator(mode="after")
    def _email_from_with_host(self) -> Settings:
        if self.smtp_host and not self.email_from:
            raise ValueError("TALLY_EMAIL_FROM must be set when TALLY_SMTP_HOST is (the From address of the emails)")
        return self

    @field_validator("nats_url")
    @classmethod
    def _nats_servers(cls, value: str | None) -> str | None:
        if value is not None and not value.strip():
            return None
        return value

    @property
    def nats_servers(self) -> tuple[str, ...]:
        return tuple(server.strip() for server in (self.nats_url or "").split(",") if server.strip())

    @field_validator("dunning_retry_days")
    @classmethod
    def _increasing_days(cls, value: list[int]) -> list[int]:
        if any(day <= 0 for day in value) or value != sorted(set(value)):
            raise ValueError("give increasing positive days after the first failure, e.g. [3, 5, 7]")
        return value

    @field_validator("login_rate_per_address", "login_rate_per_email")
    @classmethod
    def _rate(cls, value: str) -> str:
        from limits import parse

        try:
            parse(value)
        except ValueError:
            raise ValueError("give a rate such as 30/minute or 100/hour") from None
        return value

    @field_validator("database_url")
    @classmethod
    def _postgres_only(cls, value: str | None) -> str | None:
        if value and not value.startswith(("postgresql://", "postgres://", "postgresql+psycopg://")):
            raise ValueError("DATABASE_URL must be a postgresql:// URL (Tally runs on PostgreSQL only)")
        return value

    @cached_property
    def session_secret(self) -> str:
        """The configured secret, or one generated on first use and kept under the data dir."""
        if self.secret_key:
            return self.secret_key
        path = self.data_dir / "secret_key"
        if not path.exists():
            self.data_dir.mkdir(parents=True, exist_ok=True)
            path.write_text(secrets.token_urlsafe(48))
            path.chmod(0o600)
        return path.read_text().strip()

    @property
    def development(self) -> bool:
        return self.env == "development"
