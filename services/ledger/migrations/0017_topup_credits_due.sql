-- 0017_topup_credits_due: a topup whose transfer confirmed is credited even
-- when nobody comes back for it.
--
-- POST /v1/topup credits the account once its payment settled: the edge asks
-- ledger.credit after verifier.settle answers. A settlement confirmed while no
-- edge was there to credit it (the edge stopped or was killed in between, or
-- answered 202 while the transfer was pending and the caller never sent the
-- request again) left the payer's money in the treasury and the account
-- uncredited until someone noticed. Now the settlement's confirmation
-- records the credit as due (an authorization recorded for
-- "topup:account:<id>", its source not credited yet), and the ledger's
-- sweeper credits what is still due some time after (the ledger's
-- FAREBOX_TOPUP_CREDIT_AFTER_S: the edge's own credit normally comes first)
-- with ledger.credit's own checks and the same source (network, transaction,
-- index 0) as the edge's: credited once, whoever comes first.
CREATE TABLE topup_credits_due (
    settlement_id bigint      PRIMARY KEY REFERENCES settlements (id),
    account_id    bigint      NOT NULL,
    amount        bigint      NOT NULL CHECK (amount > 0),
    confirmed_at  timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX topup_credits_due_by_time ON topup_credits_due (confirmed_at);

CREATE FUNCTION ledger_topup_due() RETURNS trigger LANGUAGE plpgsql AS $$
DECLARE
    v_auth authorizations;
BEGIN
    SELECT * INTO v_auth FROM authorizations WHERE id = NEW.authorization_id;
    IF v_auth.resource ~ '^topup:account:[0-9]{1,18}$'
       AND NOT EXISTS (SELECT 1 FROM credits WHERE source_chain = NEW.network AND source_tx = NEW.tx_hash
                                               AND source_index = '0') THEN
        INSERT INTO topup_credits_due (settlement_id, account_id, amount)
            VALUES (NEW.id, substring(v_auth.resource FROM 15)::bigint, v_auth.amount)
            ON CONFLICT (settlement_id) DO NOTHING;
    END IF;
    RETURN NULL;
END
$$;

CREATE TRIGGER settlements_topup_due AFTER UPDATE OF state ON settlements
    FOR EACH ROW WHEN (OLD.state IS DISTINCT FROM NEW.state AND NEW.state = 'confirmed')
    EXECUTE FUNCTION ledger_topup_due();

-- Credits at most p_limit topups due for more than p_after_ms; returns how
-- many were credited now (not by their edge before). A refusal (the account
-- closed meanwhile, the source credited with other fields) is the operator's
-- to look at: the row goes, the refusal is raised as a warning in the log.
CREATE FUNCTION ledger_credit_due_topups(p_limit integer, p_after_ms bigint) RETURNS integer
LANGUAGE plpgsql AS $$
DECLARE
    r record;
    v jsonb;
    n integer := 0;
BEGIN
    FOR r IN SELECT d.settlement_id, d.account_id, d.amount, s.network, s.tx_hash
             FROM topup_credits_due d JOIN settlements s ON s.id = d.settlement_id
             WHERE d.confirmed_at < now() - make_interval(secs => p_after_ms / 1000.0)
             ORDER BY d.confirmed_at LIMIT p_limit
             FOR UPDATE OF d SKIP LOCKED LOOP
        v := ledger_credit(jsonb_build_object('account_id', r.account_id, 'amount_micro', r.amount, 'kind', 'topup',
                                              'source', jsonb_build_object('chain', r.network, 'tx', r.tx_hash,
                                                                           'index', '0')));
        IF v ->> 'status' <> 'ok' THEN
            RAISE WARNING 'topup of settlement % for account % not credited: %', r.settlement_id, r.account_id,
                v ->> 'message';
        ELSIF NOT (v -> 'body' ->> 'duplicate')::boolean THEN
            n := n + 1;
        END IF;
        DELETE FROM topup_credits_due WHERE settlement_id = r.settlement_id;
    END LOOP;
    RETURN n;
END
$$;
