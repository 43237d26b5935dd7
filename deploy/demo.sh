#!/bin/sh
# demo.sh - the dev profile's demo account, funded through the real path: an account made with the
# admin API (fareboxctl), 5 USDC sent from an anvil development account to its deposit address on
# the dev chain, credited by the chain-watcher after its confirmations, then a key minted for it.
# Prints the key and a curl call that works with it (docker-compose logs demo). Runs in the edge
# image, which carries fareboxctl and curl.
set -eu
ANVIL=${ANVIL_URL:-http://devchain:8545}
TOKEN=${FAREBOX_EVM_TOKEN:-0x5FbDB2315678afecb367f032d93F642f64180aa3}
FROM=0x90F79bf6EB2c4f870365E785982E1f101E93b906 # anvil account 3 (unlocked, holds test USDC)
AMOUNT=5000000                                    # 5 USDC

field() { sed -n "s/.*\"$1\":\"\{0,1\}\([^\",}]*\).*/\1/p" | head -1; }
rpc() {
    curl -fsS -m 10 -H 'content-type: application/json' \
        -d "{\"jsonrpc\":\"2.0\",\"id\":1,\"method\":\"$1\",\"params\":$2}" "$ANVIL"
}

account=$(fareboxctl account create demo | field account_id)
[ -n "$account" ] || { echo "demo: could not make the account" >&2; exit 1; }
address=$(fareboxctl account deposit-address "$account" | sed -n 's/.*"evm":{"address":"\(0x[0-9a-fA-F]*\)".*/\1/p')
[ -n "$address" ] || { echo "demo: no deposit address for account $account" >&2; exit 1; }

# transfer(address,uint256): selector, then the address and the amount as 32-byte words
to=$(printf '%064s' "$(echo "$address" | cut -c3- | tr 'A-F' 'a-f')" | tr ' ' 0)
value=$(printf '%064x' "$AMOUNT")
tx=$(rpc eth_sendTransaction "[{\"from\":\"$FROM\",\"to\":\"$TOKEN\",\"data\":\"0xa9059cbb$to$value\"}]" | field result)
echo "demo: sent 5 USDC to account $account's deposit address $address (transaction $tx)"

i=0
until [ "$(fareboxctl account show "$account" | field balance_micro)" -ge "$AMOUNT" ] 2>/dev/null; do
    i=$((i + 1))
    [ "$i" -le 120 ] || { echo "demo: the deposit was not credited within 2 minutes" >&2; exit 1; }
    sleep 1
done
key=$(fareboxctl key mint "$account" --label demo | field key)
cat <<EOF
demo: account $account credited 5 USDC by the chain-watcher. Its API key (shown once):

    $key

    curl http://localhost:${FAREBOX_HTTP_PORT:-8402}/v1/chat/completions -H "Authorization: Bearer $key" \\
      -H 'content-type: application/json' \\
      -d '{"model":"gpt-4o-mini","messages":[{"role":"user","content":"hello"}]}'

x402 without a key: anvil's development accounts 1..9 hold test USDC on http://localhost:${FAREBOX_ANVIL_PORT:-8545}
(chain id 84532, token $TOKEN).
EOF
