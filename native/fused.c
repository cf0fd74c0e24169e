// The fused training loops of captioner_native that are built around exp: the softmax cross-entropy of the
// output layer with its gradient, the LSTM cell forward and backward, and the attention scores forward and
// backward. This file alone is built with -ffast-math (native/binding.gyp): that lets GCC vectorise expf
// through glibc's libmvec and the sums in these loops, several times faster than IEEE-ordered code.
//
// What -ffast-math costs here, and why the byte-identical promises still hold: each result is a fixed
// function of the inputs and of the instruction set the loader picked (CAPTIONER_CLONES), but not the
// IEEE-ordered one, and the vector and scalar paths of a loop compute exp differently. So on one machine a
// rerun, a --resume and the same worker count give the same bytes (nothing here depends on where the
// operands lie on the heap: test/tf/native.test.ts checks it), while another CPU (another clone), another
// glibc or the wasm kernels give other last bits. Nothing that must be exact (Adam, the data-parallel
// reduction, the gradient norm) is in this file; those are in blas.c, built without -ffast-math.
//
// The arguments are trusted: blas.c checks every size, offset and overlap before calling in.
#include <math.h>
#include <stdint.h>
#include "fused.h"

// One row of the fused softmax cross-entropy of z + bias against `target` (a target outside [0, V) picks
// nothing, as tf.oneHot does): writes d = scale (softmax - onehot) (d may be z: read before written),
// adds d to db, returns the row's cross-entropy.
static inline double xent_row(const float *z, const float *bias, int32_t target, int64_t V, float scale, float *d, float *db) {
  float max = -INFINITY;
  for (int64_t j = 0; j < V; j++) {
    float v = z[j] + bias[j];
    max = v > max ? v : max;
  }
  float picked = target >= 0 && target < V ? z[target] + bias[target] : 0.0f;
  float sum = 0.0f;
  for (int64_t j = 0; j < V; j++) {
    float e = expf(z[j] + bias[j] - max);
    d[j] = e;
    sum += e;
  }
  float k = scale / sum;
  for (int64_t j = 0; j < V; j++) d[j] *= k;
  if (target >= 0 && target < V) d[target] -= scale;
  for (int64_t j = 0; j < V; j++) db[j] += d[j];
  return (double)max + log((double)sum) - (double)picked;
}

// z [M, V], bias [V], targets [M] -> d [M, V], db [V] (column sums of d); returns the summed cross-entropy.
CAPTIONER_CLONES
double captioner_xent_rows(const float *z, const float *bias, const int32_t *targets, int64_t M, int64_t V, float scale,
                           float *d, float *db) {
  for (int64_t j = 0; j < V; j++) db[j] = 0.0f;
  double total = 0.0;
  for (int64_t i = 0; i < M; i++) total += xent_row(z + i * V, bias, targets[i], V, scale, d + i * V, db);
  return total;
}

// The LSTM cell, forward and backward, one pass over each row (tfjs takes about 10 kernels for the
// forward and 20 for its gradient). Gate order along 4U: input, forget, cell, output.
// tanh through exp so that the whole loop vectorises (glibc's libmvec has expf but not tanhf); its
// absolute error stays within a few float ulps of 1. The argument is clamped to +-40 first: under
// -ffast-math a reciprocal of 1 + inf may come out NaN, and sigmoid(-40) is 4e-18, tanh(20) is 1.
static inline float clamp40(float x) { return x < -40.0f ? -40.0f : (x > 40.0f ? 40.0f : x); }
static inline float sigm(float x) { return 1.0f / (1.0f + expf(-clamp40(x))); }
static inline float tanh_(float x) { return 2.0f / (1.0f + expf(clamp40(-2.0f * x))) - 1.0f; }

// One row each; restrict-qualified parameters let the compiler vectorise the loop (it does not with the
// same pointers formed inside the row loop). blas.c refuses outputs that overlap any operand.
static inline void lstm_row(const float *restrict a, const float *restrict b, const float *restrict c, int64_t U,
                            float *restrict h, float *restrict c2) {
  for (int64_t j = 0; j < U; j++) {
    float i = sigm(a[j] + b[j]), f = sigm(a[U + j] + b[U + j]);
    float g = tanh_(a[2 * U + j] + b[2 * U + j]), o = sigm(a[3 * U + j] + b[3 * U + j]);
    float cn = f * c[j] + i * g;
    c2[j] = cn;
    h[j] = o * tanh_(cn);
  }
}

static inline void lstm_grad_row(const float *restrict a, const float *restrict b, const float *restrict c,
                                 const float *restrict c2, const float *restrict dh, const float *restrict dc2,
                                 int64_t U, float *restrict dz, float *restrict dc) {
  for (int64_t j = 0; j < U; j++) {
    float i = sigm(a[j] + b[j]), f = sigm(a[U + j] + b[U + j]);
    float g = tanh_(a[2 * U + j] + b[2 * U + j]), o = sigm(a[3 * U + j] + b[3 * U + j]);
    float tc = tanh_(c2[j]);
    float dct = dc2[j] + dh[j] * o * (1.0f - tc * tc);  // through h = o tanh(c') and from step t+1
    dz[j] = dct * g * i * (1.0f - i);
    dz[U + j] = dct * c[j] * f * (1.0f - f);
    dz[2 * U + j] = dct * i * (1.0f - g * g);
    dz[3 * U + j] = dh[j] * tc * o * (1.0f - o);
    dc[j] = dct * f;
  }
}

// zx, rec [N, 4U], c [N, U] -> h, c2 [N, U]
CAPTIONER_CLONES
void captioner_lstm_rows(const float *zx, const float *rec, const float *c, int64_t N, int64_t U, float *h, float *c2) {
  for (int64_t r = 0; r < N; r++) lstm_row(zx + r * 4 * U, rec + r * 4 * U, c + r * U, U, h + r * U, c2 + r * U);
}

// zx, rec [N, 4U], c, c2, dh, dc2 [N, U] -> dz [N, 4U], dc [N, U]
CAPTIONER_CLONES
void captioner_lstm_grad_rows(const float *zx, const float *rec, const float *c, const float *c2, const float *dh,
                              const float *dc2, int64_t N, int64_t U, float *dz, float *dc) {
  for (int64_t r = 0; r < N; r++) {
    lstm_grad_row(zx + r * 4 * U, rec + r * 4 * U, c + r * U, c2 + r * U, dh + r * U, dc2 + r * U, U, dz + r * 4 * U, dc + r * U);
  }
}

// Additive attention scores (Show, Attend and Tell), forward and backward, one pass over the [N, P, A]
// grid each way; tfjs took five elementwise kernels forward and, back, four more plus a transpose, a
// reduction over P and a product. The backward pass recomputes the tanh instead of keeping it per step.
static inline float attn_row(const float *restrict e, const float *restrict at, const float *restrict w, int64_t A) {
  float dot = 0.0f;
  for (int64_t a = 0; a < A; a++) dot += tanh_(e[a] + at[a]) * w[a];
  return dot;
}

static inline void attn_grad_row(const float *restrict e, const float *restrict at, const float *restrict w, float ds,
                                 int64_t A, float *restrict de, float *restrict dat, float *restrict dw) {
  for (int64_t a = 0; a < A; a++) {
    float y = tanh_(e[a] + at[a]);
    float g = ds * w[a] * (1.0f - y * y);
    de[a] = g;
    dat[a] += g;
    dw[a] += y * ds;
  }
}

// enc [N, P, A], att [N, A], w [A] -> s [N, P]
CAPTIONER_CLONES
void captioner_attn_rows(const float *enc, const float *att, const float *w, int64_t N, int64_t P, int64_t A, float *s) {
  for (int64_t n = 0; n < N; n++) {
    for (int64_t p = 0; p < P; p++) s[n * P + p] = attn_row(enc + (n * P + p) * A, att + n * A, w, A);
  }
}

// enc [N, P, A], att [N, A], w [A], ds [N, P] -> dEnc [N, P, A], dAtt [N, A], dw [A]
CAPTIONER_CLONES
void captioner_attn_grad_rows(const float *enc, const float *att, const float *w, const float *ds, int64_t N, int64_t P,
                              int64_t A, float *de, float *dat, float *dw) {
  for (int64_t i = 0; i < N * A; i++) dat[i] = 0.0f;
  for (int64_t a = 0; a < A; a++) dw[a] = 0.0f;
  for (int64_t n = 0; n < N; n++) {
    for (int64_t p = 0; p < P; p++) {
      int64_t r = n * P + p;
      attn_grad_row(enc + r * A, att + n * A, w, ds[r], A, de + r * A, dat + n * A, dw);
    }
  }
}
