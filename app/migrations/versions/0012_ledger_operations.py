"""Ledger: one round trip per hot operation (consume credits, adjust a balance, grant credits,
post an entry such as an invoice's).

Each function claims the idempotency key, creates the accounts it needs, locks the customer rows
it moves in a fixed order, checks what it may draw after the locks, writes the postings and moves
the cached balances and grants, inside the caller's transaction. A refusal the caller can act on
(a key reused for another request) is returned as an outcome, not raised, so the caller's
transaction stays usable; what no caller may ask for (an unbalanced posting, a non-positive
amount) raises.

Revision ID: 0012
Revises: 0011
"""

from alembic import op

revision = "0012"
down_revision = "0011"
branch_labels = None
depends_on = None

NO_OWNER = "'00000000-0000-0000-0000-000000000000'::uuid"

FUNCTIONS = [
    # The account of an owner (NULL: a system account), created on first use; a concurrent first
    # use waits on the unique index and then reads the winner's row.
    f"""
    CREATE OR REPLACE FUNCTION ledger_account(p_customer uuid, p_kind text, p_currency text, p_as_of timestamptz)
    RETURNS uuid LANGUAGE plpgsql AS $$
    DECLARE
      found_id uuid;
    BEGIN
      SELECT a.id INTO found_id FROM ledger_accounts a
        WHERE coalesce(a.customer_id, {NO_OWNER}) = coalesce(p_customer, {NO_OWNER})
          AND a.kind = p_kind AND a.currency = p_currency;
      IF found_id IS NOT NULL THEN
        RETURN found_id;
      END IF;
      INSERT INTO ledger_accounts (id, customer_id, kind, currency, balance, created_at)
        VALUES (gen_random_uuid(), p_customer, p_kind, p_currency, CASE WHEN p_customer IS NOT NULL THEN 0 END, p_as_of)
        ON CONFLICT ((coalesce(customer_id, {NO_OWNER})), kind, currency) DO NOTHING
        RETURNING id INTO found_id;
      IF found_id IS NULL THEN
        SELECT a.id INTO found_id FROM ledger_accounts a
          WHERE coalesce(a.customer_id, {NO_OWNER}) = coalesce(p_customer, {NO_OWNER})
            AND a.kind = p_kind AND a.currency = p_currency;
      END IF;
      RETURN found_id;
    END $$
    """,
    # The account as the Python services see it, and whether the current transaction wrote its
    # row: a system account is remembered beyond the transaction only once committed. (Tally uses
    # no savepoints: a row written inside one would carry the subtransaction's id, not this one.)
    """
    CREATE OR REPLACE FUNCTION ledger_account_row(
      p_customer uuid, p_kind text, p_currency text, p_as_of timestamptz,
      OUT account_id uuid, OUT account_balance bigint, OUT account_created_at timestamptz, OUT uncommitted boolean)
    LANGUAGE plpgsql AS $$
    BEGIN
      account_id := ledger_account(p_customer, p_kind, p_currency, p_as_of);
      SELECT a.balance, a.created_at, coalesce(a.xmin = pg_current_xact_id_if_assigned()::xid, false)
        INTO account_balance, account_created_at, uncommitted
        FROM ledger_accounts a WHERE a.id = account_id;
    END $$
    """,
    # The same lock and writes as before, refusing at once (not only at commit) legs that do not
    # balance. The balances are found by their ids (an index scan whatever the table's statistics
    # say; a join with the unnested legs was planned as a scan of every account).
    """
    CREATE OR REPLACE FUNCTION ledger_post(p_transaction uuid, p_accounts uuid[], p_amounts bigint[], p_grants uuid[])
    RETURNS void LANGUAGE plpgsql AS $$
    BEGIN
      IF cardinality(p_accounts) < 2 OR (SELECT sum(leg) FROM unnest(p_amounts) AS leg) <> 0 THEN
        RAISE EXCEPTION 'ledger transaction % is unbalanced (legs %)', p_transaction, p_amounts
          USING ERRCODE = 'check_violation';
      END IF;
      PERFORM 1 FROM ledger_accounts
        WHERE id = ANY(p_accounts) AND customer_id IS NOT NULL ORDER BY id FOR UPDATE;
      INSERT INTO ledger_postings (transaction_id, account_id, amount, grant_id)
        SELECT p_transaction, leg.account_id, leg.amount, leg.grant_id
        FROM unnest(p_accounts, p_amounts, p_grants) AS leg(account_id, amount, grant_id);
      UPDATE ledger_accounts AS account
        SET balance = account.balance + (SELECT sum(leg.amount) FROM unnest(p_accounts, p_amounts)
                                           AS leg(account_id, amount) WHERE leg.account_id = account.id)
        WHERE account.id = ANY(p_accounts) AND account.customer_id IS NOT NULL;
    END $$
    """,
    # The deferred balance check of migration 0003, unchanged in what it refuses; each posting's
    # account is found by its id, where a join was planned as a scan of every account.
    """
    CREATE OR REPLACE FUNCTION ledger_check_balanced() RETURNS trigger LANGUAGE plpgsql AS $$
    DECLARE
      total numeric;
      postings integer;
      foreign_currency integer;
      expected text;
    BEGIN
      SELECT t.currency INTO expected FROM ledger_transactions t WHERE t.id = NEW.transaction_id;
      SELECT coalesce(sum(p.amount), 0), count(*),
             count(*) FILTER (WHERE (SELECT a.currency FROM ledger_accounts a WHERE a.id = p.account_id) <> expected)
        INTO total, postings, foreign_currency
      FROM ledger_postings p
      WHERE p.transaction_id = NEW.transaction_id;
      IF total <> 0 OR postings < 2 OR foreign_currency > 0 THEN
        RAISE EXCEPTION 'ledger transaction % is unbalanced (sum %, % postings, % in another currency)',
          NEW.transaction_id, total, postings, foreign_currency USING ERRCODE = 'check_violation';
      END IF;
      RETURN NULL;
    END $$
    """,
    # Claim an idempotency key: p_transaction when this call wrote the row; the original's id
    # when the same request was made before (its hash matches); NULL when the key was used for
    # another request. A concurrent holder of the key is waited for by the unique index.
    """
    CREATE OR REPLACE FUNCTION ledger_claim(
      p_transaction uuid, p_kind text, p_currency text, p_customer uuid, p_effective_at timestamptz,
      p_recorded_at timestamptz, p_actor text, p_reason text, p_trace_id text, p_key text, p_hash text)
    RETURNS uuid LANGUAGE plpgsql AS $$
    DECLARE
      original uuid;
      original_hash text;
    BEGIN
      INSERT INTO ledger_transactions (id, kind, currency, customer_id, effective_at, recorded_at, actor, reason,
                                       trace_id, idempotency_key, request_hash)
        VALUES (p_transaction, p_kind, p_currency, p_customer, p_effective_at, p_recorded_at, p_actor, p_reason,
                p_trace_id, p_key, p_hash)
        ON CONFLICT DO NOTHING;
      IF FOUND THEN
        RETURN p_transaction;
      END IF;
      SELECT t.id, t.request_hash INTO original, original_hash FROM ledger_transactions t
        WHERE t.idempotency_key = p_key;
      RETURN CASE WHEN original_hash = p_hash THEN original END;
    END $$
    """,
    # Draw p_amount from the customer's grants: the drawable grants are locked in id order, then
    # drawn in consumption order (priority, earliest expiry with never-expiring last, oldest),
    # from what remains once the locks are held. Nothing drawable claims nothing. A replay
    # returns what the original drew.
    """
    CREATE OR REPLACE FUNCTION ledger_consume_credits(
      p_transaction uuid, p_customer uuid, p_currency text, p_amount bigint, p_reason text, p_actor text,
      p_key text, p_hash text, p_trace_id text, p_as_of timestamptz,
      OUT outcome text, OUT ledger_transaction uuid, OUT consumed bigint)
    LANGUAGE plpgsql AS $$
    DECLARE
      drawn_grants uuid[];
      drawn_amounts bigint[];
      original_hash text;
      credits uuid;
      receivable uuid;
    BEGIN
      IF p_amount IS NULL OR p_amount <= 0 THEN
        RAISE EXCEPTION 'a consumption must be positive, not %', p_amount USING ERRCODE = 'check_violation';
      END IF;
      SELECT coalesce(array_agg(drawn.id ORDER BY drawn.id), '{}'),
             coalesce(array_agg(drawn.take ORDER BY drawn.id), '{}'),
             coalesce(sum(drawn.take), 0)
        INTO drawn_grants, drawn_amounts, consumed
      FROM (
        SELECT ordered.id, least(ordered.remaining, p_amount - ordered.before)::bigint AS take
        FROM (
          SELECT locked.id, locked.remaining,
                 sum(locked.remaining) OVER (
                   ORDER BY locked.priority, locked.expires_at NULLS LAST, locked.effective_at, locked.sequence
                   ROWS BETWEEN UNBOUNDED PRECEDING AND CURRENT ROW) - locked.remaining AS before
          FROM (
            SELECT g.id, g.remaining, g.priority, g.expires_at, g.effective_at, g.sequence FROM credit_grants g
            WHERE g.customer_id = p_customer AND g.currency = p_currency AND g.status = 'active'
              AND g.remaining > 0 AND g.effective_at <= p_as_of AND (g.expires_at IS NULL OR g.expires_at > p_as_of)
            ORDER BY g.id FOR UPDATE
          ) AS locked
        ) AS ordered
        WHERE ordered.before < p_amount
      ) AS drawn;
      IF consumed = 0 THEN
        SELECT t.id, t.request_hash INTO ledger_transaction, original_hash FROM ledger_transactions t
          WHERE t.idempotency_key = p_key;
        IF NOT FOUND THEN
          outcome := 'nothing drawable';
          ledger_transaction := NULL;
          RETURN;
        END IF;
        IF original_hash <> p_hash THEN
          ledger_transaction := NULL;
        END IF;
      ELSE
        ledger_transaction := ledger_claim(p_transaction, 'credit_consumption', p_currency, p_customer, p_as_of,
                                           p_as_of, p_actor, p_reason, p_trace_id, p_key, p_hash);
      END IF;
      IF ledger_transaction IS NULL THEN
        outcome := 'key reused';
        consumed := 0;
        RETURN;
      END IF;
      IF ledger_transaction <> p_transaction THEN
        outcome := 'replayed';
        SELECT coalesce(sum(p.amount), 0) INTO consumed FROM ledger_postings p
          WHERE p.transaction_id = ledger_transaction AND p.grant_id IS NOT NULL;
        RETURN;
      END IF;
      credits := ledger_account(p_customer, 'credits', p_currency, p_as_of);
      receivable := ledger_account(p_customer, 'receivable', p_currency, p_as_of);
      PERFORM ledger_post(
        p_transaction,
        array_fill(credits, ARRAY[cardinality(drawn_grants)]) || receivable,
        drawn_amounts || (-consumed),
        drawn_grants || NULL::uuid);
      UPDATE credit_grants AS g SET remaining = g.remaining - drawn.take
        FROM unnest(drawn_grants, drawn_amounts) AS drawn(id, take)
        WHERE g.id = drawn.id;
      outcome := 'created';
    END $$
    """,
    # Debit (positive) or credit (negative) the customer's receivable against the adjustments
    # system account, which keeps no cached balance and so is never locked: an entry of two legs.
    """
    CREATE OR REPLACE FUNCTION ledger_adjust_balance(
      p_transaction uuid, p_customer uuid, p_currency text, p_amount bigint, p_reason text, p_actor text,
      p_key text, p_hash text, p_as_of timestamptz,
      OUT outcome text, OUT ledger_transaction uuid)
    LANGUAGE plpgsql AS $$
    BEGIN
      IF p_amount IS NULL OR p_amount = 0 THEN
        RAISE EXCEPTION 'an adjustment must not be zero' USING ERRCODE = 'check_violation';
      END IF;
      SELECT entry.outcome, entry.ledger_transaction INTO outcome, ledger_transaction
        FROM ledger_post_entry(p_transaction, 'adjustment', p_currency, p_customer, p_as_of, p_as_of, p_actor,
                               p_reason, NULL, p_key, p_hash, ARRAY[p_customer, NULL]::uuid[],
                               ARRAY['receivable', 'adjustments'], ARRAY[p_amount, -p_amount]) AS entry;
    END $$
    """,
    # Credit the customer with a new grant funded by p_funded_by (a system account, or the
    # customer's own receivable).
    """
    CREATE OR REPLACE FUNCTION ledger_grant_credits(
      p_transaction uuid, p_grant uuid, p_customer uuid, p_currency text, p_amount bigint, p_priority integer,
      p_effective_at timestamptz, p_expires_at timestamptz, p_source text, p_funded_by text, p_reason text,
      p_actor text, p_key text, p_hash text, p_trace_id text, p_as_of timestamptz,
      OUT outcome text, OUT ledger_transaction uuid, OUT grant_sequence bigint)
    LANGUAGE plpgsql AS $$
    DECLARE
      credits uuid;
      funded_by uuid;
    BEGIN
      IF p_amount IS NULL OR p_amount <= 0 THEN
        RAISE EXCEPTION 'a grant must be positive, not %', p_amount USING ERRCODE = 'check_violation';
      END IF;
      ledger_transaction := ledger_claim(p_transaction, 'credit_grant', p_currency, p_customer, p_effective_at,
                                         p_as_of, p_actor, p_reason, p_trace_id, p_key, p_hash);
      IF ledger_transaction IS NULL THEN
        outcome := 'key reused';
        RETURN;
      ELSIF ledger_transaction <> p_transaction THEN
        outcome := 'replayed';
        RETURN;
      END IF;
      credits := ledger_account(p_customer, 'credits', p_currency, p_as_of);
      funded_by := ledger_account(CASE WHEN p_funded_by = 'receivable' THEN p_customer END, p_funded_by, p_currency,
                                  p_as_of);
      INSERT INTO credit_grants (id, customer_id, currency, amount, remaining, priority, effective_at, expires_at,
                                 source, reason, actor, status, transaction_id, created_at)
        VALUES (p_grant, p_customer, p_currency, p_amount, p_amount, p_priority, p_effective_at, p_expires_at,
                p_source, p_reason, p_actor, 'active', p_transaction, p_as_of)
        RETURNING sequence INTO grant_sequence;
      PERFORM ledger_post(p_transaction, ARRAY[funded_by, credits], ARRAY[p_amount, -p_amount],
                          ARRAY[NULL, p_grant]);
      outcome := 'created';
    END $$
    """,
    # Any balanced entry between accounts named by (owner, kind), NULL owners being system
    # accounts: how an invoice posts its receivable and revenues in one round trip.
    """
    CREATE OR REPLACE FUNCTION ledger_post_entry(
      p_transaction uuid, p_kind text, p_currency text, p_customer uuid, p_effective_at timestamptz,
      p_recorded_at timestamptz, p_actor text, p_reason text, p_trace_id text, p_key text, p_hash text,
      p_owners uuid[], p_account_kinds text[], p_amounts bigint[],
      OUT outcome text, OUT ledger_transaction uuid)
    LANGUAGE plpgsql AS $$
    DECLARE
      accounts uuid[];
    BEGIN
      ledger_transaction := ledger_claim(p_transaction, p_kind, p_currency, p_customer, p_effective_at,
                                         p_recorded_at, p_actor, p_reason, p_trace_id, p_key, p_hash);
      IF ledger_transaction IS NULL THEN
        outcome := 'key reused';
      ELSIF ledger_transaction <> p_transaction THEN
        outcome := 'replayed';
      ELSE
        SELECT array_agg(ledger_account(leg.owner, leg.kind, p_currency, p_recorded_at) ORDER BY leg.n)
          INTO accounts
          FROM unnest(p_owners, p_account_kinds) WITH ORDINALITY AS leg(owner, kind, n);
        PERFORM ledger_post(p_transaction, accounts, p_amounts, array_fill(NULL::uuid, ARRAY[cardinality(accounts)]));
        outcome := 'created';
      END IF;
    END $$
    """,
]

SIGNATURES = [
    "ledger_post_entry(uuid, text, text, uuid, timestamptz, timestamptz, text, text, text, text, text, uuid[], text[], "
    "bigint[])",
    "ledger_grant_credits(uuid, uuid, uuid, text, bigint, integer, timestamptz, timestamptz, text, text, text, text, "
    "text, text, text, timestamptz)",
    "ledger_adjust_balance(uuid, uuid, text, bigint, text, text, text, text, timestamptz)",
    "ledger_consume_credits(uuid, uuid, text, bigint, text, text, text, text, text, timestamptz)",
    "ledger_claim(uuid, text, text, uuid, timestamptz, timestamptz, text, text, text, text, text)",
    "ledger_account_row(uuid, text, text, timestamptz)",
    "ledger_account(uuid, text, text, timestamptz)",
]

LEDGER_POST_0006 = """
    CREATE OR REPLACE FUNCTION ledger_post(p_transaction uuid, p_accounts uuid[], p_amounts bigint[], p_grants uuid[])
    RETURNS void LANGUAGE plpgsql AS $$
    BEGIN
      PERFORM 1 FROM ledger_accounts
        WHERE id = ANY(p_accounts) AND customer_id IS NOT NULL ORDER BY id FOR UPDATE;
      INSERT INTO ledger_postings (transaction_id, account_id, amount, grant_id)
        SELECT p_transaction, leg.account_id, leg.amount, leg.grant_id
        FROM unnest(p_accounts, p_amounts, p_grants) AS leg(account_id, amount, grant_id);
      UPDATE ledger_accounts AS account SET balance = account.balance + moved.delta
        FROM (SELECT leg.account_id, sum(leg.amount) AS delta
              FROM unnest(p_accounts, p_amounts) AS leg(account_id, amount) GROUP BY leg.account_id) AS moved
        WHERE account.id = moved.account_id AND account.customer_id IS NOT NULL;
    END $$
"""


LEDGER_CHECK_BALANCED_0003 = """
    CREATE OR REPLACE FUNCTION ledger_check_balanced() RETURNS trigger LANGUAGE plpgsql AS $$
    DECLARE total numeric; postings integer; foreign_currency integer;
    BEGIN
      SELECT coalesce(sum(p.amount), 0), count(*), count(*) FILTER (WHERE a.currency <> t.currency)
        INTO total, postings, foreign_currency
      FROM ledger_postings p
      JOIN ledger_accounts a ON a.id = p.account_id
      JOIN ledger_transactions t ON t.id = p.transaction_id
      WHERE p.transaction_id = NEW.transaction_id;
      IF total <> 0 OR postings < 2 OR foreign_currency > 0 THEN
        RAISE EXCEPTION 'ledger transaction % is unbalanced (sum %, % postings, % in another currency)',
          NEW.transaction_id, total, postings, foreign_currency USING ERRCODE = 'check_violation';
      END IF;
      RETURN NULL;
    END $$
"""


def upgrade() -> None:
    for function in FUNCTIONS:
        op.execute(function)


def downgrade() -> None:
    for signature in SIGNATURES:
        op.execute(f"DROP FUNCTION IF EXISTS {signature}")
    op.execute(LEDGER_POST_0006)
    op.execute(LEDGER_CHECK_BALANCED_0003)
