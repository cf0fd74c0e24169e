// The loops of captioner_native, shared by its two translation units: blas.c (the Node-API entry points,
// their argument checks, OpenBLAS and the thread policy, and the loops whose results are exact IEEE float
// arithmetic: Adam, the gradient reduction, sums of squares; built without -ffast-math) and fused.c (the
// fused loops built around exp: softmax cross-entropy, the LSTM cell, attention scores; built with
// -ffast-math so that exp vectorises). Every function here trusts its arguments: blas.c has checked them.
#ifndef CAPTIONER_FUSED_H
#define CAPTIONER_FUSED_H
#include <stdint.h>

// Build the hot loops for several x86-64 instruction sets, the loader picking the machine's best (an
// ifunc). Only where the toolchain has it: x86-64 Linux with glibc (musl has no ifunc, arm64 GCC before 14
// and macOS have no target_clones); elsewhere one build for the compiler's baseline.
#if defined(__x86_64__) && defined(__linux__) && defined(__GLIBC__) && defined(__has_attribute)
#if __has_attribute(target_clones)
#define CAPTIONER_CLONES __attribute__((target_clones("avx512f", "avx2", "default")))
#endif
#endif
#ifndef CAPTIONER_CLONES
#define CAPTIONER_CLONES
#endif

// "Iterations of this loop do not depend on each other" (element i reads and writes index i only).
#if defined(__clang__)
#define CAPTIONER_IVDEP _Pragma("clang loop vectorize(assume_safety)")
#elif defined(__GNUC__)
#define CAPTIONER_IVDEP _Pragma("GCC ivdep")
#else
#define CAPTIONER_IVDEP
#endif

// fused.c (-ffast-math)
double captioner_xent_rows(const float *z, const float *bias, const int32_t *targets, int64_t M, int64_t V, float scale,
                           float *d, float *db);
void captioner_lstm_rows(const float *zx, const float *rec, const float *c, int64_t N, int64_t U, float *h, float *c2);
void captioner_lstm_grad_rows(const float *zx, const float *rec, const float *c, const float *c2, const float *dh,
                              const float *dc2, int64_t N, int64_t U, float *dz, float *dc);
void captioner_attn_rows(const float *enc, const float *att, const float *w, int64_t N, int64_t P, int64_t A, float *s);
void captioner_attn_grad_rows(const float *enc, const float *att, const float *w, const float *ds, int64_t N, int64_t P,
                              int64_t A, float *de, float *dat, float *dw);

#endif
