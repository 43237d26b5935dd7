# tests.cmake - every test ctest runs: the self-test of each class, then the
# integration tests under tests/ (Node's test runner and shell), which start
# their own peers. FAREBOX_BIN tells them which build to test.
set(FAREBOX_SELFTESTS fb_util fb_log fb_config fb_msgpack fb_endpoint fb_curve fb_curlm fb_jsonrpc fb_rpc_msg fb_codec fb_apikey
    fb_keccak fb_evm fb_secp fb_hdkey fb_eip712 fb_rlp fb_ethtx fb_solana fb_x402
    edge_routes edge_facilitator edge_reply edge_catalog edge_auth edge_admin edge_sse edge_translate edge_reverse edge_chat edge_upstream edge_x402 edge_limit edge_metrics edge_scan edge_journal ledger_rpc evm_exact svm_exact message_proof)
foreach (t ${FAREBOX_SELFTESTS})
    add_test(NAME unit.${t} COMMAND farebox-selftest ${t})
endforeach ()

set(FAREBOX_TEST_ENV
    "FAREBOX_BIN=${CMAKE_BINARY_DIR}/bin"
    "FAREBOX_SOURCE=${CMAKE_SOURCE_DIR}"
    "FAREBOX_TEST_TMP=${CMAKE_BINARY_DIR}/test-tmp")

# Node integration tests: tests/integration/<name>.test.mjs
file(GLOB FAREBOX_NODE_TESTS ${CMAKE_SOURCE_DIR}/tests/integration/*.test.mjs)
foreach (f ${FAREBOX_NODE_TESTS})
    get_filename_component(name ${f} NAME_WE)
    add_test(NAME integration.${name}
             COMMAND node --test --test-reporter=spec --test-timeout=600000 ${f}
             WORKING_DIRECTORY ${CMAKE_SOURCE_DIR}/tests)
    set_tests_properties(integration.${name} PROPERTIES ENVIRONMENT "${FAREBOX_TEST_ENV}" TIMEOUT 900)
endforeach ()

# The code follows .clang-format.
add_test(NAME style.clang_format
         COMMAND sh -c "find common services tools tests/support tests/fuzz bench -name '*.[ch]' | xargs clang-format --dry-run --Werror"
         WORKING_DIRECTORY ${CMAKE_SOURCE_DIR})

# The dev chains (anvil with the EIP-3009 test token, surfpool with a mint).
add_test(NAME integration.devchain COMMAND node ${CMAKE_SOURCE_DIR}/tests/devchain/selftest.mjs
         WORKING_DIRECTORY ${CMAKE_SOURCE_DIR}/tests)
set_tests_properties(integration.devchain PROPERTIES TIMEOUT 300)

# Encodings and crypto against the official libraries' known answers.
add_test(NAME unit.vectors COMMAND farebox-test-vectors ${CMAKE_SOURCE_DIR}/tests/vectors/vectors.json)

# Each fuzz driver over its seed corpus and past findings (the fuzzing itself runs in the fuzz
# build: tests/fuzz/fuzz.cmake).
foreach (f ${FAREBOX_FUZZERS})
    set(dirs ${CMAKE_SOURCE_DIR}/tests/fuzz/seeds/${f})
    if (EXISTS ${CMAKE_SOURCE_DIR}/tests/fuzz/regressions/${f})
        list(APPEND dirs ${CMAKE_SOURCE_DIR}/tests/fuzz/regressions/${f})
    endif ()
    add_test(NAME fuzz.replay.${f} COMMAND farebox-fuzz-${f} ${dirs})
endforeach ()
# the seeds of payments reach the end of the checks, where the properties are
foreach (f x402_header x402_json solana_tx)
    set_tests_properties(fuzz.replay.${f} PROPERTIES PASS_REGULAR_EXPRESSION " [1-9][0-9]* passed every")
endforeach ()

# Deployment: compose.yaml on a real Docker engine (images built, the stack scaled behind HAProxy,
# end to end and chaos under load). Runs alone: it builds images and loads both cores.
add_test(NAME deploy.compose
         COMMAND node --test --test-reporter=spec --test-timeout=1800000 ${CMAKE_SOURCE_DIR}/tests/deploy/compose.test.mjs
         WORKING_DIRECTORY ${CMAKE_SOURCE_DIR}/tests)
set_tests_properties(deploy.compose PROPERTIES ENVIRONMENT "${FAREBOX_TEST_ENV}" TIMEOUT 2400 RUN_SERIAL TRUE)
