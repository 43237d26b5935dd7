# fuzz.cmake - the tests of the fuzz build (FAREBOX_FUZZ=ON, build/fuzz/):
# each libFuzzer driver runs for FAREBOX_FUZZ_SECONDS (environment, default
# 30) from its seed corpus (tests/fuzz/seeds/NAME) and the corpus it grew in
# earlier runs of this build directory (corpus/NAME). A crash, a sanitizer
# report or a broken property fails the test; the input is kept under
# artifacts/ and replays with the sanitizer build's farebox-fuzz-NAME.
foreach (f ${FAREBOX_FUZZERS})
    add_test(NAME fuzz.${f}
             COMMAND sh ${CMAKE_SOURCE_DIR}/tests/fuzz/run ${CMAKE_BINARY_DIR}/bin/farebox-fuzz-${f}
                     ${CMAKE_SOURCE_DIR}/tests/fuzz/seeds/${f} ${CMAKE_BINARY_DIR}/corpus/${f}
                     ${CMAKE_BINARY_DIR}/artifacts)
    set_tests_properties(fuzz.${f} PROPERTIES TIMEOUT 900)
endforeach ()
