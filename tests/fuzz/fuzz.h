/* fuzz.h - shared by the fuzz drivers in tests/fuzz/.
 *
 * Each driver defines LLVMFuzzerTestOneInput(). Built with clang and
 * -fsanitize=fuzzer (FAREBOX_FUZZ=ON, build/fuzz/) it is a libFuzzer binary;
 * in the other builds it is linked with replay.c, which runs the inputs named
 * on its command line (files or directories: the seed corpus, or a crash
 * artifact to reproduce). Beyond "no crash, no sanitizer report", a driver
 * states properties with FUZZ_ASSERT: a broken one aborts, and libFuzzer keeps
 * the input that broke it. */
#ifndef FAREBOX_FUZZ_H
#define FAREBOX_FUZZ_H

#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

/* payments and proofs that passed every offline check so far (replay.c
 * reports it: seeds that stop passing no longer reach the deepest checks) */
extern unsigned long fuzz_passes;

#define FUZZ_ASSERT(cond)                                                                                    \
    do {                                                                                                     \
        if (!(cond)) {                                                                                       \
            fprintf(stderr, "%s:%d: property broken: %s\n", __FILE__, __LINE__, #cond);                      \
            abort();                                                                                         \
        }                                                                                                    \
    } while (0)

/* The clock of the known-answer payloads (tests/vectors): 2026-01-01T00:00:00Z,
 * so that valid signatures get past the time checks to the later ones. */
#define FUZZ_NOW 1767225600

#endif
