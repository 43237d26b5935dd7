-- 0014_no_failed_settlement: an authorization whose settlement is under way
-- cannot be marked failed.
--
-- The edge marks an x402 payment failed when its settlement did not succeed,
-- so that it is never settled or used again. When the settlement's outcome
-- was unknown to the edge (the verifier's answer lost), a settlement may have
-- begun: the verifier's tracker then signs, sends and confirms it whatever
-- the authorization says, and the payer would pay for a call the edge
-- reported as not served (the audit's settlements check catches the pair:
-- confirmed, not settled). Now ledger.mark_failed refuses an authorization
-- with a settlement that has not failed (settlement_exists): the settlement's
-- outcome decides (ledger.settlement_result marks it settled or failed).
-- ledger.settlement_begin already refuses a failed authorization, and both
-- lock the authorization's row, so one of the two always comes second.
CREATE OR REPLACE FUNCTION ledger_mark_authorization(p_args jsonb, p_to text) RETURNS jsonb LANGUAGE plpgsql AS $$
DECLARE
    v_auth authorizations;
    v_settlement settlements;
    v_tx text := p_args ->> 'settlement_tx';
    v_allowed text[] := CASE p_to WHEN 'served' THEN ARRAY['accepted']
                                  WHEN 'settled' THEN ARRAY['accepted', 'served']
                                  ELSE ARRAY['accepted', 'served'] END;
BEGIN
    SELECT * INTO v_auth FROM authorizations WHERE id = ledger_id(p_args, 'authorization_id') FOR UPDATE;
    IF v_auth.id IS NULL THEN
        RETURN ledger_err('authorization_not_found', 'no authorization ' || coalesce(p_args ->> 'authorization_id', 'null'));
    END IF;
    IF p_to = 'settled' AND coalesce(length(v_tx), 0) NOT BETWEEN 1 AND 200 THEN
        RETURN ledger_err('bad_request', 'settlement_tx must be a string of 1..200 characters');
    END IF;
    IF length(coalesce(p_args ->> 'reason', '')) > 500 THEN
        RETURN ledger_err('bad_request', 'reason is longer than 500 characters');
    END IF;
    IF v_auth.state = p_to AND (p_to <> 'settled' OR v_auth.settlement_tx = v_tx) THEN
        RETURN ledger_ok(ledger_auth_view(v_auth));
    END IF;
    IF NOT v_auth.state = ANY (v_allowed) THEN
        RETURN ledger_err('invalid_state', 'authorization ' || v_auth.id || ' is ' || v_auth.state || ', not ' ||
                          array_to_string(v_allowed, ' or '), ledger_auth_view(v_auth));
    END IF;
    IF p_to = 'failed' THEN
        SELECT * INTO v_settlement FROM settlements WHERE authorization_id = v_auth.id;
        IF v_settlement.id IS NOT NULL AND v_settlement.state <> 'failed' THEN
            RETURN ledger_err('settlement_exists',
                              'authorization ' || v_auth.id || ' has a settlement that is ' || v_settlement.state ||
                              ': its outcome decides', ledger_auth_view(v_auth));
        END IF;
    END IF;
    UPDATE authorizations SET state = p_to, updated_at = now(),
           settlement_tx = coalesce(v_tx, settlement_tx),
           reason = CASE WHEN p_to = 'failed' THEN coalesce(p_args ->> 'reason', '') ELSE reason END
        WHERE id = v_auth.id RETURNING * INTO v_auth;
    RETURN ledger_ok(ledger_auth_view(v_auth));
END
$$;
