-- 0027_svm_unsigned_settlements: a Solana settlement begun and never signed
-- can be finished by any replica.
--
-- A Solana settlement is begun (the row created, the authorization recorded),
-- then its transaction is signed with the fee payer's key, recorded
-- (settlement_signed) and only then sent. A replica stopped between the first
-- two steps left the settlement 'begun' with no transaction: nothing had been
-- sent, the tracker could not act on it (it had only the row), and it stayed
-- open for good; a retry of the payment went on with it, a payment never
-- retried was neither settled nor failed.
--
-- The verifier now gives settlement_begin the signed transaction (base64) as
-- the settlement's calldata, as an EVM settlement carries the call it signs.
-- A tracker that finds such a settlement records it signed, with a height it
-- cannot land after, and sends it: from there it is judged like any other
-- (confirmed, failed on chain, or expired). Only a settlement begun before
-- this migration, with no calldata, is still left as it was.
--
-- Two changes here:
-- - calldata is compared only for EVM settlements (those with a wallet
--   nonce). A Solana authorization is the fee payer's signature over the
--   message, so every transaction carrying it is that one transaction; the
--   payer's own signature in it can differ between copies (ed25519 signers
--   need not be deterministic), and such a copy is no conflict.
-- - open_settlements lists last only the settlements nothing can be done
--   with: begun, no transaction, no nonce and no calldata.
CREATE OR REPLACE FUNCTION ledger_settlement_conflict(a authorizations, s settlements, p_args jsonb)
RETURNS jsonb LANGUAGE plpgsql STABLE AS $$
DECLARE
    v_pay_to text := lower(coalesce(p_args ->> 'pay_to', ''));
    v_calldata text := lower(coalesce(p_args ->> 'calldata', ''));
BEGIN
    IF a.id IS NOT NULL AND v_pay_to <> '' AND a.pay_to <> '' AND lower(a.pay_to) <> v_pay_to THEN
        RETURN ledger_err('authorization_conflict', 'nonce ' || a.nonce || ' of ' || a.payer ||
                          ' was recorded for another recipient', ledger_auth_view(a));
    END IF;
    IF s.id IS NOT NULL AND s.nonce IS NOT NULL AND v_calldata <> '' AND s.calldata <> ''
       AND lower(s.calldata) <> v_calldata THEN
        RETURN ledger_err('authorization_conflict', 'nonce ' || a.nonce || ' of ' || a.payer ||
                          ' belongs to another authorization, settled as settlement ' || s.id,
                          ledger_settlement_view(s));
    END IF;
    RETURN NULL;
END
$$;

CREATE OR REPLACE FUNCTION ledger_read_settlements(p_method text, p_args jsonb) RETURNS jsonb
LANGUAGE plpgsql STABLE AS $$
DECLARE
    v_items jsonb;
BEGIN
    IF p_method = 'ledger.settlement' THEN
        RETURN coalesce(
            (SELECT ledger_ok(ledger_settlement_view(s)) FROM settlements s
             WHERE s.id = ledger_id(p_args, 'settlement_id')
                OR s.authorization_id = ledger_id(p_args, 'authorization_id')
             LIMIT 1),
            ledger_err('settlement_not_found', 'no such settlement'));
    END IF;
    -- open settlements not touched for older_than_ms: EVM ones by wallet nonce, then Solana ones by
    -- their last update, the ones nothing can be done with last
    SELECT coalesce(jsonb_agg(ledger_settlement_view(s)
                              ORDER BY (s.raw_tx IS NULL AND s.nonce IS NULL AND s.calldata = ''), s.nonce NULLS LAST,
                                       s.updated_at),
                    '[]')
        INTO v_items
    FROM (SELECT * FROM settlements
          WHERE state IN ('begun', 'signed') AND (p_args ->> 'network' IS NULL OR network = p_args ->> 'network')
            AND updated_at < now() - coalesce(ledger_amount(p_args, 'older_than_ms'), 0) * interval '1 millisecond'
          ORDER BY (raw_tx IS NULL AND nonce IS NULL AND calldata = ''), nonce NULLS LAST, updated_at
          LIMIT least(greatest(coalesce(ledger_id(p_args, 'limit'), 50), 1), 500)) s;
    RETURN ledger_ok(jsonb_build_object('settlements', v_items));
END
$$;
