-- 0010_bare_hold_locks: a charge write locks its hold's row alone.
--
-- Since 0009 ledger.charge changes nothing but its hold's row (and adds
-- charge rows), yet ledger_lock still locked each hold's account and key rows
-- with it, so charge writes of several slices of one key (several edges or
-- workers) waited on each other for rows they do not touch. ledger_lock takes
-- a fifth list: holds to lock without their account and key. All holds are
-- still locked first and in id order, then accounts, then keys: no deadlock
-- between batches. The four-argument form stays for replicas of the previous
-- release during a rolling upgrade.

CREATE FUNCTION ledger_lock(p_holds bigint[], p_accounts bigint[], p_keys bigint[], p_codes text[],
                            p_bare_holds bigint[])
RETURNS void LANGUAGE plpgsql AS $$
DECLARE
    v_code text;
    v_system bigint[] := '{}';
BEGIN
    PERFORM 1 FROM holds WHERE id = ANY (p_holds || p_bare_holds) ORDER BY id FOR UPDATE;
    FOREACH v_code IN ARRAY coalesce(p_codes, '{}') LOOP
        v_system := v_system || ledger_system_account(v_code);
    END LOOP;
    IF cardinality(p_accounts) > 0 OR cardinality(v_system) > 0 OR cardinality(p_holds) > 0 THEN
        PERFORM 1 FROM accounts
            WHERE id = ANY (p_accounts) OR id = ANY (v_system)
               OR id IN (SELECT account_id FROM holds WHERE id = ANY (p_holds))
            ORDER BY id FOR UPDATE;
    END IF;
    IF cardinality(p_keys) > 0 OR cardinality(p_holds) > 0 THEN
        PERFORM 1 FROM api_keys
            WHERE id = ANY (p_keys) OR id IN (SELECT key_id FROM holds WHERE id = ANY (p_holds))
            ORDER BY id FOR UPDATE;
    END IF;
END
$$;
