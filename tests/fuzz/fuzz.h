/*
 * fuzz.h: what every libFuzzer target here shares: the entry point's declaration and CHECK, an
 * assertion that stays on in every build (a failed property must crash the fuzzer, with the
 * condition named, whatever NDEBUG says).
 */
#ifndef PE_FUZZ_H
#define PE_FUZZ_H

#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>

#define CHECK(cond)                                                                                                                \
    do {                                                                                                                           \
        if (!(cond)) {                                                                                                             \
            fprintf(stderr, "%s:%d: check failed: %s\n", __FILE__, __LINE__, #cond);                                               \
            abort();                                                                                                               \
        }                                                                                                                          \
    } while (0)

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

#endif
