-- 0005_deposits: custodial deposit addresses and the chain-watcher's cursors.
--
-- Each caller account has at most one deposit address per chain family
-- ('evm': one address for every EVM network; 'solana': the owner of the
-- deposit token account). The chain-watcher derives them from the master seed
-- at a fixed path per account (recorded here, so an operator can check them);
-- no key material is stored. A cursor is the last block of a network whose
-- deposits have all been credited: it only moves forward, so watchers that
-- race, or a provider behind the head, never move it back.

CREATE TABLE deposit_addresses (
    id          bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    account_id  bigint      NOT NULL REFERENCES accounts (id),
    chain       text        NOT NULL CHECK (chain IN ('evm', 'solana')),
    address     text        NOT NULL CHECK (length(address) BETWEEN 32 AND 64),
    path        text        NOT NULL CHECK (length(path) <= 100),
    created_at  timestamptz NOT NULL DEFAULT now(),
    UNIQUE (account_id, chain),
    UNIQUE (chain, address)
);
CREATE TRIGGER deposit_addresses_immutable BEFORE UPDATE OR DELETE ON deposit_addresses
    FOR EACH ROW EXECUTE FUNCTION ledger_forbid_change();

CREATE TABLE watch_cursors (
    network     text        PRIMARY KEY,  -- CAIP-2
    block       bigint      NOT NULL CHECK (block >= 0),
    hash        text        NOT NULL DEFAULT '',
    updated_at  timestamptz NOT NULL DEFAULT now()
);

CREATE FUNCTION ledger_deposit_address_view(d deposit_addresses) RETURNS jsonb LANGUAGE sql STABLE AS $$
    SELECT jsonb_build_object('deposit_address_id', d.id, 'account_id', d.account_id, 'chain', d.chain,
                              'address', d.address, 'path', d.path, 'created_at_ms', ledger_ms(d.created_at))
$$;

-- ledger.add_deposit_address {account_id, chain, address, path}: records the
-- account's address on a chain. The same one again answers the existing row;
-- another address for the account, or the address of another account, is a
-- conflict.
CREATE FUNCTION ledger_add_deposit_address(p_args jsonb) RETURNS jsonb LANGUAGE plpgsql AS $$
DECLARE
    v_account bigint := ledger_id(p_args, 'account_id');
    v_chain text := p_args ->> 'chain';
    v_address text := p_args ->> 'address';
    v_path text := coalesce(p_args ->> 'path', '');
    v_row deposit_addresses;
BEGIN
    IF v_chain IS NULL OR v_chain NOT IN ('evm', 'solana') THEN
        RETURN ledger_err('bad_request', 'chain must be evm or solana');
    END IF;
    IF v_address IS NULL OR length(v_address) NOT BETWEEN 32 AND 64 OR length(v_path) > 100 THEN
        RETURN ledger_err('bad_request', 'address must be 32..64 characters and path at most 100');
    END IF;
    IF (ledger_caller(v_account)).id IS NULL THEN
        RETURN ledger_err('account_not_found', 'no caller account ' || coalesce(p_args ->> 'account_id', 'null'));
    END IF;
    SELECT * INTO v_row FROM deposit_addresses WHERE account_id = v_account AND chain = v_chain;
    IF v_row.id IS NULL THEN
        SELECT * INTO v_row FROM deposit_addresses WHERE chain = v_chain AND address = v_address;
        IF v_row.id IS NOT NULL THEN
            RETURN ledger_err('idempotency_conflict', 'the address belongs to account ' || v_row.account_id);
        END IF;
        -- one insert at a time, each committed before the next takes its id:
        -- a watcher paging by id (after_id) then never skips an address
        -- committed late with a smaller id
        PERFORM pg_advisory_xact_lock(hashtext('farebox.deposit_addresses'));
        INSERT INTO deposit_addresses (account_id, chain, address, path) VALUES (v_account, v_chain, v_address, v_path)
            RETURNING * INTO v_row;
        RETURN ledger_ok(ledger_deposit_address_view(v_row) || jsonb_build_object('created', true));
    END IF;
    IF v_row.address <> v_address OR v_row.path <> v_path THEN
        RETURN ledger_err('idempotency_conflict', 'the account already has the ' || v_chain || ' address '
                          || v_row.address, ledger_deposit_address_view(v_row));
    END IF;
    RETURN ledger_ok(ledger_deposit_address_view(v_row) || jsonb_build_object('created', false));
END
$$;

-- ledger.advance_cursor {network, block, hash}: moves the network's cursor to
-- block when that is further than it stands; answers where it stands.
CREATE FUNCTION ledger_advance_cursor(p_args jsonb) RETURNS jsonb LANGUAGE plpgsql AS $$
DECLARE
    v_network text := p_args ->> 'network';
    v_block bigint := ledger_id(p_args, 'block');
    v_row watch_cursors;
BEGIN
    IF v_network IS NULL OR length(v_network) NOT BETWEEN 3 AND 100 OR v_block IS NULL OR v_block < 0 THEN
        RETURN ledger_err('bad_request', 'network and a block number of 0 or more are required');
    END IF;
    INSERT INTO watch_cursors AS c (network, block, hash) VALUES (v_network, v_block, coalesce(p_args ->> 'hash', ''))
        ON CONFLICT (network) DO UPDATE SET block = EXCLUDED.block, hash = EXCLUDED.hash, updated_at = now()
        WHERE c.block < EXCLUDED.block;
    SELECT * INTO v_row FROM watch_cursors WHERE network = v_network;
    RETURN ledger_ok(jsonb_build_object('network', v_row.network, 'block', v_row.block, 'hash', v_row.hash,
                                        'updated_at_ms', ledger_ms(v_row.updated_at)));
END
$$;

-- ledger.deposit_addresses {[chain, account_id, after_id, limit]}: addresses
-- in the order they were made (the watcher pages through them with after_id).
CREATE FUNCTION ledger_read_deposit_addresses(p_args jsonb) RETURNS jsonb LANGUAGE plpgsql STABLE AS $$
DECLARE
    v_limit integer := least(greatest(coalesce(ledger_id(p_args, 'limit'), 1000), 1), 5000);
    v_items jsonb;
    v_last bigint;
BEGIN
    IF ledger_id(p_args, 'account_id') IS NOT NULL
       AND NOT EXISTS (SELECT 1 FROM accounts WHERE id = ledger_id(p_args, 'account_id')) THEN
        RETURN ledger_err('account_not_found', 'no account ' || (p_args ->> 'account_id'));
    END IF;
    SELECT coalesce(jsonb_agg(ledger_deposit_address_view(d) ORDER BY d.id), '[]'), max(d.id)
    INTO v_items, v_last
    FROM (SELECT * FROM deposit_addresses
          WHERE (p_args ->> 'chain' IS NULL OR chain = p_args ->> 'chain')
            AND (ledger_id(p_args, 'account_id') IS NULL OR account_id = ledger_id(p_args, 'account_id'))
            AND id > coalesce(ledger_id(p_args, 'after_id'), 0)
          ORDER BY id LIMIT v_limit) d;
    RETURN ledger_ok(jsonb_build_object('addresses', v_items, 'last_id', v_last,
        'more', jsonb_array_length(v_items) = v_limit));
END
$$;

-- ledger.watch_cursor {network}: where the network's cursor stands (block
-- null when the network was never scanned).
CREATE FUNCTION ledger_read_watch_cursor(p_args jsonb) RETURNS jsonb LANGUAGE plpgsql STABLE AS $$
DECLARE
    v_row watch_cursors;
BEGIN
    SELECT * INTO v_row FROM watch_cursors WHERE network = p_args ->> 'network';
    RETURN ledger_ok(jsonb_build_object('network', p_args ->> 'network', 'block', v_row.block,
                                        'hash', coalesce(v_row.hash, ''), 'updated_at_ms', ledger_ms(v_row.updated_at)));
END
$$;

CREATE OR REPLACE FUNCTION ledger_read_dispatch(p_method text, p_args jsonb) RETURNS jsonb LANGUAGE plpgsql STABLE AS $$
BEGIN
    IF p_method IN ('ledger.settlement', 'ledger.open_settlements') THEN
        RETURN ledger_read_settlements(p_method, p_args);
    END IF;
    IF p_method = 'ledger.charges' THEN
        RETURN ledger_read_charges(p_args);
    END IF;
    IF p_method = 'ledger.deposit_addresses' THEN
        RETURN ledger_read_deposit_addresses(p_args);
    END IF;
    IF p_method = 'ledger.watch_cursor' THEN
        RETURN ledger_read_watch_cursor(p_args);
    END IF;
    RETURN ledger_read(p_method, p_args);
END
$$;

CREATE OR REPLACE FUNCTION ledger_apply(p_method text, p_idem text, p_fingerprint bytea, p_args jsonb)
RETURNS jsonb LANGUAGE plpgsql AS $$
DECLARE
    v_prior jsonb;
    v_result jsonb;
BEGIN
    v_prior := ledger_claim(p_idem, p_method, p_fingerprint);
    IF v_prior IS NOT NULL THEN
        RETURN v_prior;
    END IF;
    v_result := CASE p_method
        WHEN 'ledger.open_account' THEN ledger_open_account(p_args)
        WHEN 'ledger.mint_key' THEN ledger_mint_key(p_args)
        WHEN 'ledger.revoke_key' THEN ledger_revoke_key(p_args)
        WHEN 'ledger.update_key' THEN ledger_update_key(p_args)
        WHEN 'ledger.hold' THEN ledger_hold(p_args)
        WHEN 'ledger.charge' THEN ledger_charge(p_args)
        WHEN 'ledger.commit' THEN ledger_commit(p_args)
        WHEN 'ledger.void' THEN ledger_void(p_args)
        WHEN 'ledger.credit' THEN ledger_credit(p_args)
        WHEN 'ledger.record_authorization' THEN ledger_record_authorization(p_args)
        WHEN 'ledger.mark_served' THEN ledger_mark_authorization(p_args, 'served')
        WHEN 'ledger.mark_settled' THEN ledger_mark_authorization(p_args, 'settled')
        WHEN 'ledger.mark_failed' THEN ledger_mark_authorization(p_args, 'failed')
        WHEN 'ledger.settlement_begin' THEN ledger_settlement_begin(p_args)
        WHEN 'ledger.settlement_signed' THEN ledger_settlement_signed(p_args)
        WHEN 'ledger.settlement_broadcast' THEN ledger_settlement_broadcast(p_args)
        WHEN 'ledger.settlement_result' THEN ledger_settlement_result(p_args)
        WHEN 'ledger.add_deposit_address' THEN ledger_add_deposit_address(p_args)
        WHEN 'ledger.advance_cursor' THEN ledger_advance_cursor(p_args)
        ELSE ledger_err('unknown_method', 'the ledger has no write operation ' || p_method)
    END;
    IF p_idem IS NOT NULL THEN
        IF v_result ->> 'status' = 'ok' THEN
            UPDATE operations SET result = v_result WHERE idem_key = p_idem;
        ELSE
            DELETE FROM operations WHERE idem_key = p_idem;
        END IF;
    END IF;
    RETURN v_result;
END
$$;
