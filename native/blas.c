// captioner_native: the matrix products of the tfjs wasm backend, run by the machine's OpenBLAS on the
// wasm heap itself (no copies), and the hot elementwise loops of training as single vectorised passes
// (softmax cross-entropy, Adam, the LSTM cell, attention scores, each with its gradient where it has one,
// and data-parallel training's reduction and Adam on shared host arrays). OpenBLAS is opened with dlopen
// at load, so this file needs no BLAS headers to build and the package installs where OpenBLAS is absent
// (load() then says why).
//
// This file owns the Node-API entry points and checks every argument before any memory is touched; the
// loops built around exp are in fused.c (built with -ffast-math), the exact ones (Adam, the reduction, sums
// of squares) are here (built without it: IEEE float arithmetic in a fixed order, the same bytes on every
// instruction set). See fused.h.
//
// JS API (see src/tf/native.ts). Every number must be a finite integer where an integer is meant (sizes
// in [0, 2^31 - 1], byte offsets and ranges in [0, 2^53 - 1]) and a finite float32 where a float is meant.
// A malformed argument (wrong type, NaN, Infinity, a fraction, a size out of range, a wrong count) is a
// TypeError; a well-formed offset or range that puts an array outside the heap or the typed array, off a
// 4-byte boundary, or an output overlapping another operand (beyond the in-place uses listed) is a
// RangeError. All sizes are computed with overflow checks against the heap's real length, so no call can
// read or write outside it, and OpenBLAS is never handed parameters it would reject.
//
//   load(paths: string[], threads) -> { ok: true, library, config, threads } | { ok: false, reason }
//                                     opens the first library that has cblas_sgemm (once per process);
//                                     the first successful load fixes the thread policy: `threads` (> 0),
//                                     else OpenBLAS's own start count (OPENBLAS_NUM_THREADS, else cores)
//   setThreads(n) -> the policy before: sets the thread policy (1..1024) for the whole process
//   shareThreads(delta) -> the count in effect: `delta` more (or fewer) worker threads now run products
//                                     at once; while any do, OpenBLAS runs on 1 thread (see Threads)
//   threadInfo() -> { policy, inEffect, workers, threads, blas }: the policy, the count it gives now,
//                                     the declared workers, the JS threads (main and workers) that hold
//                                     this addon, and the count OpenBLAS reports (-1: not OpenBLAS)
//   sgemm(heap: ArrayBuffer, transA, transB, M, N, K, alpha, aByteOff, lda, bByteOff, ldb, beta,
//         cByteOff, ldc)              C = alpha op(A) op(B) + beta C, row-major float32, offsets in bytes;
//                                     C may not overlap A or B
//   xent(heap, zOff, biasOff, targetsOff, M, V, scale, dOff, dbOff) -> sum over rows of the cross-entropy
//                                     of softmax(z + bias) against int32 targets (a target outside [0, V)
//                                     picks nothing, as tf.oneHot does); writes d = scale (softmax - onehot)
//                                     [M, V] and db = its column sums [V] (d may be z: in place)
//   sumSquares(heap, off, n) -> the sum of x^2 over n floats (in double)
//   adam(heap, xOff, gOff, mOff, vOff, n, gscale, beta1, beta2, lr, eps, xOut, mOut, vOut): one Adam
//                                     update with the gradient scaled by gscale (clipping), written to
//                                     the three outputs (each may be its input: in place)
//   reduceBlocks(grads: Float32Array, total, parts, from, to, block, sums: Float64Array): sums the first
//                                     `parts` regions of `total` floats into region 0 over [from, to)
//                                     (accumulated in double, region order), and writes each block's sum
//                                     of squares (in double) to sums; the typed arrays may be shared
//   adamArrays(w, m, v, g: Float32Array, from, to, gscale, beta1, beta2, lr, eps): adam's update in
//                                     place over [from, to) of host (or shared) arrays
//   copy(dst, src: Float32Array)      memmove between two Float32Arrays of one length
//   attn(heap, encOff, attOff, wOff, N, P, A, sOut): attention scores s[n, p] = w . tanh(enc[n, p] + att[n])
//                                     for enc [N, P, A], att [N, A], w [A] -> s [N, P]
//   attnGrad(heap, encOff, attOff, wOff, dsOff, N, P, A, dEncOut, dAttOut, dwOut): its backward pass,
//                                     recomputing the tanh: dEnc [N, P, A], dAtt [N, A], dw [A]
//   lstm(heap, zxOff, recOff, cOff, N, U, hOut, cOut): one LSTM cell on pre-activations zx + rec [N, 4U]
//                                     (gates i, f, g, o) and cell state c [N, U]; writes h and c' [N, U]
//   lstmGrad(heap, zxOff, recOff, cOff, c2Off, dhOff, dc2Off, N, U, dzOut, dcOut): its backward pass,
//                                     recomputing the gates: dz [N, 4U] (for zx and rec) and dc [N, U]
//
// Threads. OpenBLAS keeps one thread count for the whole process, and every JS thread (the main thread,
// each worker) that requires this addon shares it, so the count is a process policy held here under one
// mutex, never saved and restored around a call by one thread while another computes:
// - the policy P is fixed by the first load (the caller's count, else OpenBLAS's own start count:
//   OPENBLAS_NUM_THREADS, else every core), or later by setThreads (benchmarks);
// - while one JS thread holds the addon (counted by module init and env cleanup) and no workers are
//   declared (shareThreads), OpenBLAS runs on P threads, and products below 64M multiply-adds run on
//   the calling thread alone: 1 thread, then back to P, with the mutex held across the product so that
//   no other thread can load the addon or change the count in between;
// - while two JS threads or more hold it, or workers are declared (data-parallel training, the decoding
//   pool), OpenBLAS runs on 1 thread: the workers are the parallelism. Threaded products from several
//   threads would queue on OpenBLAS's own lock and oversubscribe the cores, and OpenBLAS's result depends
//   on its thread count (another split, other last bits): on 1 thread a worker's product gives the bytes
//   the main thread's gives for every product below 64M.
// The count changes only when threads come and go or the policy is set, never per call in that case.
#define _GNU_SOURCE
#include <dlfcn.h>
#include <float.h>
#include <math.h>
#include <node_api.h>
#include <pthread.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>
#include "fused.h"

enum { RowMajor = 101, NoTrans = 111, Trans = 112 };
typedef void (*sgemm_fn)(int order, int ta, int tb, int m, int n, int k, float alpha, const float *a, int lda,
                         const float *b, int ldb, float beta, float *c, int ldc);
typedef void (*set_threads_fn)(int);
typedef char *(*get_config_fn)(void);

#define SMALL_PRODUCT (64.0 * 1024 * 1024)
#define MAX_SAFE ((int64_t)9007199254740991)  // 2^53 - 1: every integer a JS number holds exactly
#define MAX_SIZE ((int64_t)INT32_MAX)
#define MAX_THREADS 1024
#define MAX_PATHS 16

// ---------------------------------------------------------------------------------------------------
// Process-wide state, all under `lock`. No code path returns, or calls into Node, while holding it.

static pthread_mutex_t lock = PTHREAD_MUTEX_INITIALIZER;
static sgemm_fn sgemm = NULL;
static set_threads_fn set_threads = NULL;
static get_config_fn get_config = NULL;
static int (*get_threads)(void) = NULL;
static char library[1024] = "";
static int policy = 0;     // the process's BLAS threads (0: unknown, a CBLAS without OpenBLAS's thread calls)
static int workers = 0;    // worker threads declared by shareThreads that run products at once
static int in_effect = 0;  // the count last given to OpenBLAS
static int holders = 0;    // JS threads (Node environments) that hold this addon

// The count the policy gives now (see Threads), handed to OpenBLAS when it changed. Caller holds the lock.
static void apply_threads_locked(void) {
  if (!set_threads || policy < 1) return;
  int n = workers > 0 || holders > 1 ? 1 : policy;
  if (n != in_effect) {
    set_threads(n);
    in_effect = n;
  }
}

static void holder_gone(void *arg) {
  (void)arg;
  pthread_mutex_lock(&lock);
  holders--;
  apply_threads_locked();
  pthread_mutex_unlock(&lock);
}

// ---------------------------------------------------------------------------------------------------
// Argument readers: each throws the JS error and returns false on a bad argument.

static void throw_arg(napi_env env, bool range, const char *fn, const char *what, const char *why) {
  char msg[320];
  snprintf(msg, sizeof msg, "captioner_native.%s: %s %s", fn, what, why);
  if (range) napi_throw_range_error(env, NULL, msg);
  else napi_throw_type_error(env, NULL, msg);
}

static bool get_number(napi_env env, napi_value v, const char *fn, const char *what, double *out) {
  napi_valuetype t;
  if (napi_typeof(env, v, &t) != napi_ok || t != napi_number || napi_get_value_double(env, v, out) != napi_ok) {
    throw_arg(env, false, fn, what, "must be a number");
    return false;
  }
  return true;
}

// An integer in [lo, hi] (|lo|, hi <= 2^53 - 1): a finite, integral number. Not a number, NaN, an
// infinity or a fraction is a TypeError; an integer outside [lo, hi] a RangeError when `position` (an
// offset or a range end: it lies outside), else a TypeError (a malformed size).
static bool get_int(napi_env env, napi_value v, const char *fn, const char *what, int64_t lo, int64_t hi, bool position,
                    int64_t *out) {
  double d;
  char why[160];
  if (!get_number(env, v, fn, what, &d)) return false;
  if (!isfinite(d) || d != trunc(d)) {
    snprintf(why, sizeof why, "must be a finite integer, got %.17g", d);
    throw_arg(env, false, fn, what, why);
    return false;
  }
  if (d < (double)lo || d > (double)hi) {
    snprintf(why, sizeof why, "must lie in [%lld, %lld], got %.17g", (long long)lo, (long long)hi, d);
    throw_arg(env, position, fn, what, why);
    return false;
  }
  *out = (int64_t)d;
  return true;
}

// A finite number that is finite as a float32 too (|x| <= FLT_MAX).
static bool get_float(napi_env env, napi_value v, const char *fn, const char *what, float *out) {
  double d;
  char why[96];
  if (!get_number(env, v, fn, what, &d)) return false;
  if (!isfinite(d) || fabs(d) > FLT_MAX) {
    snprintf(why, sizeof why, "must be a finite float32, got %.17g", d);
    throw_arg(env, false, fn, what, why);
    return false;
  }
  *out = (float)d;
  return true;
}

static bool get_args(napi_env env, napi_callback_info info, const char *fn, size_t want, napi_value *argv) {
  size_t argc = want;
  char why[64];
  if (napi_get_cb_info(env, info, &argc, argv, NULL, NULL) != napi_ok) {
    napi_throw_error(env, NULL, "captioner_native: N-API call failed");
    return false;
  }
  if (argc != want) {
    snprintf(why, sizeof why, "%zu arguments, got %zu", want, argc);
    throw_arg(env, false, fn, "takes", why);
    return false;
  }
  return true;
}

static bool get_heap(napi_env env, napi_value v, const char *fn, char **data, size_t *bytes) {
  void *p = NULL;
  bool is_ab = false;
  if (napi_is_arraybuffer(env, v, &is_ab) != napi_ok || !is_ab || napi_get_arraybuffer_info(env, v, &p, bytes) != napi_ok ||
      !p) {
    throw_arg(env, false, fn, "heap", "must be a non-empty, attached ArrayBuffer");
    return false;
  }
  *data = (char *)p;
  return true;
}

// A Float32Array's (or Float64Array's) data and length, whatever its buffer (ArrayBuffer or shared).
static bool get_typed(napi_env env, napi_value v, const char *fn, const char *what, napi_typedarray_type want, void **data,
                      size_t *length) {
  bool is = false;
  napi_typedarray_type type;
  napi_value buffer;
  size_t offset;
  if (napi_is_typedarray(env, v, &is) != napi_ok || !is ||
      napi_get_typedarray_info(env, v, &type, length, data, &buffer, &offset) != napi_ok || type != want ||
      (*data == NULL && *length != 0)) {
    throw_arg(env, false, fn, what, want == napi_float32_array ? "must be a Float32Array" : "must be a Float64Array");
    return false;
  }
  return true;
}

// ---------------------------------------------------------------------------------------------------
// Where arrays lie: byte spans [start, end) inside the heap, computed with overflow checks.

typedef struct {
  int64_t start, end;  // bytes; end == start: empty
} Span;

static bool mul64(int64_t a, int64_t b, int64_t *out) { return !__builtin_mul_overflow(a, b, out); }
static bool add64(int64_t a, int64_t b, int64_t *out) { return !__builtin_add_overflow(a, b, out); }

// `elems` 4-byte elements from byte `off`: false unless 4-byte aligned and inside [0, heap).
static bool span_of(int64_t heap, int64_t off, int64_t elems, Span *s) {
  int64_t bytes, end;
  if (off < 0 || off % 4 != 0 || elems < 0 || !mul64(elems, 4, &bytes) || !add64(off, bytes, &end) || end > heap) return false;
  s->start = off;
  s->end = end;
  return true;
}

// A row-major matrix of `rows` x `cols` with leading dimension `ld` (>= max(1, cols)) from byte `off`.
static bool matrix_span(int64_t heap, int64_t off, int64_t rows, int64_t cols, int64_t ld, Span *s) {
  int64_t elems = 0;
  if (ld < cols || ld < 1) return false;
  if (rows > 0 && cols > 0 && !(mul64(rows - 1, ld, &elems) && add64(elems, cols, &elems))) return false;
  return span_of(heap, off, elems, s);
}

static bool overlap(Span a, Span b) { return a.start < a.end && b.start < b.end && a.start < b.end && b.start < a.end; }

// ---------------------------------------------------------------------------------------------------
// Load and the thread policy.

// load(paths, threads): open the first library that has cblas_sgemm. Idempotent and shared by every thread.
static napi_value Load(napi_env env, napi_callback_info info) {
  napi_value argv[2];
  if (!get_args(env, info, "load", 2, argv)) return NULL;
  bool is_array = false;
  uint32_t count = 0;
  if (napi_is_array(env, argv[0], &is_array) != napi_ok || !is_array || napi_get_array_length(env, argv[0], &count) != napi_ok ||
      count > MAX_PATHS) {
    throw_arg(env, false, "load", "paths", "must be an array of at most 16 strings");
    return NULL;
  }
  char mine[MAX_PATHS][1024];  // read before the lock (Node calls), tried under it
  for (uint32_t i = 0; i < count; i++) {
    napi_value item;
    size_t len = 0;
    if (napi_get_element(env, argv[0], i, &item) != napi_ok ||
        napi_get_value_string_utf8(env, item, mine[i], sizeof mine[i], &len) != napi_ok || len >= sizeof mine[i] - 1) {
      throw_arg(env, false, "load", "paths", "must be an array of strings of at most 1022 bytes");
      return NULL;
    }
  }
  int64_t threads;
  if (!get_int(env, argv[1], "load", "threads", 0, MAX_THREADS, false, &threads)) return NULL;

  char reason[2048] = "no library to try";
  char lib[sizeof library] = "", config[512] = "";
  bool ok;
  int now;
  pthread_mutex_lock(&lock);
  if (!sgemm) {
    if (count) reason[0] = 0;
    for (uint32_t i = 0; i < count && !sgemm; i++) {
      size_t used = strlen(reason);
      void *h = dlopen(mine[i], RTLD_NOW | RTLD_LOCAL);
      if (!h) {
        const char *e = dlerror();
        snprintf(reason + used, sizeof reason - used, "%s%s", used ? "; " : "", e ? e : mine[i]);
        continue;
      }
      sgemm_fn f = (sgemm_fn)dlsym(h, "cblas_sgemm");
      if (!f) {
        snprintf(reason + used, sizeof reason - used, "%s%s has no cblas_sgemm", used ? "; " : "", mine[i]);
        dlclose(h);
        continue;
      }
      sgemm = f;
      set_threads = (set_threads_fn)dlsym(h, "openblas_set_num_threads");
      get_config = (get_config_fn)dlsym(h, "openblas_get_config");
      get_threads = (int (*)(void))dlsym(h, "openblas_get_num_threads");
      snprintf(library, sizeof library, "%s", mine[i]);
      // the thread policy, once per process: the caller's, else what OpenBLAS started with
      policy = threads > 0 ? (int)threads : (get_threads ? get_threads() : 0);
      in_effect = get_threads ? get_threads() : 0;
      apply_threads_locked();
    }
  }
  ok = sgemm != NULL;
  if (ok) {
    snprintf(lib, sizeof lib, "%s", library);
    snprintf(config, sizeof config, "%s", get_config ? get_config() : "");
  }
  now = policy;
  pthread_mutex_unlock(&lock);

  napi_value out, v;
  if (napi_create_object(env, &out) != napi_ok || napi_get_boolean(env, ok, &v) != napi_ok ||
      napi_set_named_property(env, out, "ok", v) != napi_ok) {
    napi_throw_error(env, NULL, "captioner_native: N-API call failed");
    return NULL;
  }
  if (ok) {
    if (napi_create_string_utf8(env, lib, NAPI_AUTO_LENGTH, &v) == napi_ok) napi_set_named_property(env, out, "library", v);
    if (napi_create_string_utf8(env, config, NAPI_AUTO_LENGTH, &v) == napi_ok) napi_set_named_property(env, out, "config", v);
    if (napi_create_int32(env, now, &v) == napi_ok) napi_set_named_property(env, out, "threads", v);
  } else if (napi_create_string_utf8(env, reason, NAPI_AUTO_LENGTH, &v) == napi_ok) {
    napi_set_named_property(env, out, "reason", v);
  }
  return out;
}

static bool loaded(napi_env env, const char *fn) {
  pthread_mutex_lock(&lock);
  bool ok = sgemm != NULL;
  pthread_mutex_unlock(&lock);
  if (!ok) {
    char msg[96];
    snprintf(msg, sizeof msg, "captioner_native.%s: no BLAS library loaded (call load first)", fn);
    napi_throw_error(env, NULL, msg);
  }
  return ok;
}

static napi_value int_value(napi_env env, int n) {
  napi_value r = NULL;
  if (napi_create_int32(env, n, &r) != napi_ok) napi_throw_error(env, NULL, "captioner_native: N-API call failed");
  return r;
}

// setThreads(n): the process's thread policy (what a product gets while no workers share it).
static napi_value SetThreads(napi_env env, napi_callback_info info) {
  napi_value argv[1];
  int64_t n;
  if (!get_args(env, info, "setThreads", 1, argv) || !get_int(env, argv[0], "setThreads", "n", 1, MAX_THREADS, false, &n) ||
      !loaded(env, "setThreads")) {
    return NULL;
  }
  pthread_mutex_lock(&lock);
  int before = policy;
  policy = (int)n;
  apply_threads_locked();
  pthread_mutex_unlock(&lock);
  return int_value(env, before);
}

// shareThreads(delta): `delta` worker threads start (> 0) or stop (< 0) running products at once.
static napi_value ShareThreads(napi_env env, napi_callback_info info) {
  napi_value argv[1];
  int64_t delta;
  if (!get_args(env, info, "shareThreads", 1, argv) ||
      !get_int(env, argv[0], "shareThreads", "delta", -MAX_THREADS, MAX_THREADS, false, &delta) || !loaded(env, "shareThreads")) {
    return NULL;
  }
  bool ok;
  int now;
  pthread_mutex_lock(&lock);
  ok = workers + delta >= 0 && workers + delta <= MAX_THREADS;
  if (ok) {
    workers += (int)delta;
    apply_threads_locked();
  }
  now = in_effect;
  pthread_mutex_unlock(&lock);
  if (!ok) {
    napi_throw_range_error(env, NULL, "captioner_native.shareThreads: more workers stopped than started");
    return NULL;
  }
  return int_value(env, now);
}

static napi_value ThreadInfo(napi_env env, napi_callback_info info) {
  napi_value argv[1];
  if (!get_args(env, info, "threadInfo", 0, argv)) return NULL;
  pthread_mutex_lock(&lock);
  int values[5] = {policy, in_effect, workers, holders, get_threads ? get_threads() : -1};
  pthread_mutex_unlock(&lock);
  static const char *names[5] = {"policy", "inEffect", "workers", "threads", "blas"};
  napi_value out, v;
  if (napi_create_object(env, &out) != napi_ok) return NULL;
  for (int i = 0; i < 5; i++) {
    if (napi_create_int32(env, values[i], &v) != napi_ok || napi_set_named_property(env, out, names[i], v) != napi_ok) return NULL;
  }
  return out;
}

// ---------------------------------------------------------------------------------------------------
// sgemm

static napi_value Sgemm(napi_env env, napi_callback_info info) {
  static const char *fn = "sgemm";
  napi_value argv[14];
  char *heap;
  size_t bytes;
  bool ta, tb;
  int64_t M, N, K, aOff, lda, bOff, ldb, cOff, ldc;
  float alpha, beta;
  if (!get_args(env, info, fn, 14, argv) || !get_heap(env, argv[0], fn, &heap, &bytes)) return NULL;
  if (napi_get_value_bool(env, argv[1], &ta) != napi_ok || napi_get_value_bool(env, argv[2], &tb) != napi_ok) {
    throw_arg(env, false, fn, "transA and transB", "must be booleans");
    return NULL;
  }
  if (!get_int(env, argv[3], fn, "M", 0, MAX_SIZE, false, &M) || !get_int(env, argv[4], fn, "N", 0, MAX_SIZE, false, &N) ||
      !get_int(env, argv[5], fn, "K", 0, MAX_SIZE, false, &K) || !get_float(env, argv[6], fn, "alpha", &alpha) ||
      !get_int(env, argv[7], fn, "aOff", 0, MAX_SAFE, true, &aOff) || !get_int(env, argv[8], fn, "lda", 1, MAX_SIZE, false, &lda) ||
      !get_int(env, argv[9], fn, "bOff", 0, MAX_SAFE, true, &bOff) || !get_int(env, argv[10], fn, "ldb", 1, MAX_SIZE, false, &ldb) ||
      !get_float(env, argv[11], fn, "beta", &beta) || !get_int(env, argv[12], fn, "cOff", 0, MAX_SAFE, true, &cOff) ||
      !get_int(env, argv[13], fn, "ldc", 1, MAX_SIZE, false, &ldc) || !loaded(env, fn)) {
    return NULL;
  }
  // row-major: A is [M, K] (or [K, M] when transposed), B [K, N] (or [N, K]), C [M, N]. These are the
  // conditions under which cblas_sgemm accepts its arguments (lda >= A's columns, ...), so OpenBLAS's
  // parameter check (xerbla: a line on stderr and a silent return) can never fire.
  Span a, b, c;
  if (!matrix_span((int64_t)bytes, aOff, ta ? K : M, ta ? M : K, lda, &a) ||
      !matrix_span((int64_t)bytes, bOff, tb ? N : K, tb ? K : N, ldb, &b) || !matrix_span((int64_t)bytes, cOff, M, N, ldc, &c)) {
    napi_throw_range_error(env, NULL, "captioner_native.sgemm: a matrix lies outside the heap, off a 4-byte boundary, or has a leading dimension below its columns");
    return NULL;
  }
  if (overlap(c, a) || overlap(c, b)) {
    napi_throw_range_error(env, NULL, "captioner_native.sgemm: C overlaps A or B");
    return NULL;
  }
  if (M == 0 || N == 0) return NULL;
  const float *pa = (const float *)(heap + aOff), *pb = (const float *)(heap + bOff);
  float *pc = (float *)(heap + cOff);
  // OpenBLAS splits anything above 262,144 multiply-adds over its threads; below about 64M (the LSTM's
  // per-step [64, 256] x [256, 1024]) the split costs more than it gains (measured: 2 threads 35%
  // slower than 1 on 2 cores), so such products run on the calling thread alone. Only while this is the
  // one JS thread holding the addon (see Threads above; otherwise OpenBLAS is on 1 thread already); the
  // mutex is held across the product.
  bool alone = false;
  if ((double)M * (double)N * (double)K < SMALL_PRODUCT) {
    pthread_mutex_lock(&lock);
    alone = holders == 1 && workers == 0 && in_effect > 1 && set_threads;
    if (alone) set_threads(1);
    else pthread_mutex_unlock(&lock);
  }
  sgemm(RowMajor, ta ? Trans : NoTrans, tb ? Trans : NoTrans, (int)M, (int)N, (int)K, alpha, pa, (int)lda, pb, (int)ldb, beta,
        pc, (int)ldc);
  if (alone) {
    set_threads(in_effect);
    pthread_mutex_unlock(&lock);
  }
  return NULL;
}

// ---------------------------------------------------------------------------------------------------
// The heap entry points but sgemm share one prologue. Their arguments: the heap, `nin` input byte
// offsets, `ndims` sizes, `nh` floats, `nout` output byte offsets. `sizes` gives every array's element
// count (4-byte elements) from the sizes, inputs first (false on overflow); `alias[o]` names the input
// output o may equal exactly (in place), or -1. Every array must lie inside the heap, and no output may
// overlap another array except its own input, exactly.

typedef struct {
  const char *fn;
  const char *const *names;  // of the arguments after the heap
  size_t nin, ndims, nh, nout;
  bool (*sizes)(const int64_t *dims, int64_t *out);
  const int *alias;
} Sig;

typedef struct {
  char *heap;
  int64_t dims[4];
  float h[5];
  int64_t off[12];
} HeapCall;

static bool heap_call(napi_env env, napi_callback_info info, const Sig *s, HeapCall *c) {
  size_t want = 1 + s->nin + s->ndims + s->nh + s->nout, n = s->nin + s->nout;
  napi_value argv[16];
  size_t bytes;
  int64_t size[12];
  Span span[12];
  char msg[200];
  if (!get_args(env, info, s->fn, want, argv) || !get_heap(env, argv[0], s->fn, &c->heap, &bytes)) return false;
  for (size_t i = 0; i < s->nin; i++) {
    if (!get_int(env, argv[1 + i], s->fn, s->names[i], 0, MAX_SAFE, true, &c->off[i])) return false;
  }
  for (size_t i = 0; i < s->ndims; i++) {
    if (!get_int(env, argv[1 + s->nin + i], s->fn, s->names[s->nin + i], 0, MAX_SIZE, false, &c->dims[i])) return false;
  }
  for (size_t i = 0; i < s->nh; i++) {
    size_t k = s->nin + s->ndims + i;
    if (!get_float(env, argv[1 + k], s->fn, s->names[k], &c->h[i])) return false;
  }
  for (size_t i = 0; i < s->nout; i++) {
    size_t k = s->nin + s->ndims + s->nh + i;
    if (!get_int(env, argv[1 + k], s->fn, s->names[k], 0, MAX_SAFE, true, &c->off[s->nin + i])) return false;
  }
  if (!s->sizes(c->dims, size)) {
    snprintf(msg, sizeof msg, "captioner_native.%s: the sizes overflow (no heap holds them)", s->fn);
    napi_throw_range_error(env, NULL, msg);
    return false;
  }
  for (size_t i = 0; i < n; i++) {
    if (!span_of((int64_t)bytes, c->off[i], size[i], &span[i])) {
      const char *name = s->names[i < s->nin ? i : s->ndims + s->nh + i];
      snprintf(msg, sizeof msg, "captioner_native.%s: %s lies outside the heap or off a 4-byte boundary", s->fn, name);
      napi_throw_range_error(env, NULL, msg);
      return false;
    }
  }
  for (size_t o = s->nin; o < n; o++) {
    for (size_t i = 0; i < n; i++) {
      if (i == o || !overlap(span[o], span[i])) continue;
      int own = s->alias ? s->alias[o - s->nin] : -1;
      if ((int)i == own && span[i].start == span[o].start && span[i].end == span[o].end) continue;
      snprintf(msg, sizeof msg, "captioner_native.%s: %s overlaps %s", s->fn, s->names[s->ndims + s->nh + o],
               s->names[i < s->nin ? i : s->ndims + s->nh + i]);
      napi_throw_range_error(env, NULL, msg);
      return false;
    }
  }
  return true;
}

#define F(i) ((float *)(c.heap + c.off[i]))

// xent: z bias targets | M V | scale | d db
static bool xent_sizes(const int64_t *d, int64_t *z) {
  int64_t mv;
  if (!mul64(d[0], d[1], &mv)) return false;
  int64_t s[5] = {mv, d[1], d[0], mv, d[1]};
  memcpy(z, s, sizeof s);
  return true;
}
static const char *const xent_names[] = {"zOff", "biasOff", "targetsOff", "M", "V", "scale", "dOff", "dbOff"};
static const int xent_alias[] = {0, -1};  // d may be z
static const Sig xent_sig = {"xent", xent_names, 3, 2, 1, 2, xent_sizes, xent_alias};

static napi_value Xent(napi_env env, napi_callback_info info) {
  HeapCall c;
  if (!heap_call(env, info, &xent_sig, &c)) return NULL;
  double total = captioner_xent_rows(F(0), F(1), (const int32_t *)(c.heap + c.off[2]), c.dims[0], c.dims[1], c.h[0], F(3), F(4));
  napi_value r = NULL;
  if (napi_create_double(env, total, &r) != napi_ok) napi_throw_error(env, NULL, "captioner_native: N-API call failed");
  return r;
}

// The sum of squares of n floats in double, in a fixed order that no compiler flag or instruction set
// changes: 8 lanes (element i goes to lane i mod 8, each lane summed in order), then the tail in order,
// then the lanes pairwise. The lanes let it vectorise without reassociating anything.
CAPTIONER_CLONES
static double sum_sq(const float *x, int64_t n) {
  double l[8] = {0, 0, 0, 0, 0, 0, 0, 0};
  int64_t i = 0;
  for (; i + 8 <= n; i += 8) {
    for (int k = 0; k < 8; k++) l[k] += (double)x[i + k] * (double)x[i + k];
  }
  double tail = 0.0;
  for (; i < n; i++) tail += (double)x[i] * (double)x[i];
  return (((l[0] + l[4]) + (l[1] + l[5])) + ((l[2] + l[6]) + (l[3] + l[7]))) + tail;
}

// sumSquares: x | n
static bool one_size(const int64_t *d, int64_t *z) {
  z[0] = d[0];
  return true;
}
static const char *const sum_names[] = {"off", "n"};
static const Sig sum_sig = {"sumSquares", sum_names, 1, 1, 0, 0, one_size, NULL};

static napi_value SumSquares(napi_env env, napi_callback_info info) {
  HeapCall c;
  if (!heap_call(env, info, &sum_sig, &c)) return NULL;
  napi_value r = NULL;
  if (napi_create_double(env, sum_sq(F(0), c.dims[0]), &r) != napi_ok) napi_throw_error(env, NULL, "captioner_native: N-API call failed");
  return r;
}

// One Adam step per element, in IEEE float arithmetic (this file is built without -ffast-math and without
// FMA contraction), so every element gets the same bytes in the vector loop and in its scalar tail, on
// every instruction set, wherever a range starts.
CAPTIONER_CLONES
static void adam_update(const float *x, const float *g, const float *m, const float *v, int64_t n, float gscale, float b1,
                        float b2, float lr, float eps, float *xo, float *mo, float *vo) {
  // element i reads and writes index i only, so in-place updates (xo == x ...) are safe vectorised
  CAPTIONER_IVDEP
  for (int64_t i = 0; i < n; i++) {
    float gi = g[i] * gscale;
    float mi = m[i] * b1 + gi * (1.0f - b1);
    float vi = v[i] * b2 + gi * gi * (1.0f - b2);
    mo[i] = mi;
    vo[i] = vi;
    xo[i] = x[i] - mi / (sqrtf(vi) + eps) * lr;
  }
}

// adam: x g m v | n | gscale beta1 beta2 lr eps | xOut mOut vOut
static bool seven_sizes(const int64_t *d, int64_t *z) {
  for (int i = 0; i < 7; i++) z[i] = d[0];
  return true;
}
static const char *const adam_names[] = {"xOff", "gOff", "mOff", "vOff", "n", "gscale", "beta1", "beta2", "lr", "eps", "xOut", "mOut", "vOut"};
static const int adam_alias[] = {0, 2, 3};  // each output may be its own input
static const Sig adam_sig = {"adam", adam_names, 4, 1, 5, 3, seven_sizes, adam_alias};

static napi_value Adam(napi_env env, napi_callback_info info) {
  HeapCall c;
  if (heap_call(env, info, &adam_sig, &c)) {
    adam_update(F(0), F(1), F(2), F(3), c.dims[0], c.h[0], c.h[1], c.h[2], c.h[3], c.h[4], F(4), F(5), F(6));
  }
  return NULL;
}

// lstm: zx rec c | N U | h c2
static bool lstm_sizes(const int64_t *d, int64_t *z) {
  int64_t n, w;
  if (!mul64(d[0], d[1], &n) || !mul64(n, 4, &w)) return false;
  int64_t s[5] = {w, w, n, n, n};
  memcpy(z, s, sizeof s);
  return true;
}
static const char *const lstm_names[] = {"zxOff", "recOff", "cOff", "N", "U", "hOut", "cOut"};
static const Sig lstm_sig = {"lstm", lstm_names, 3, 2, 0, 2, lstm_sizes, NULL};

static napi_value Lstm(napi_env env, napi_callback_info info) {
  HeapCall c;
  if (heap_call(env, info, &lstm_sig, &c)) captioner_lstm_rows(F(0), F(1), F(2), c.dims[0], c.dims[1], F(3), F(4));
  return NULL;
}

// lstmGrad: zx rec c c2 dh dc2 | N U | dz dc
static bool lstm_grad_sizes(const int64_t *d, int64_t *z) {
  int64_t n, w;
  if (!mul64(d[0], d[1], &n) || !mul64(n, 4, &w)) return false;
  int64_t s[8] = {w, w, n, n, n, n, w, n};
  memcpy(z, s, sizeof s);
  return true;
}
static const char *const lstm_grad_names[] = {"zxOff", "recOff", "cOff", "c2Off", "dhOff", "dc2Off", "N", "U", "dzOut", "dcOut"};
static const Sig lstm_grad_sig = {"lstmGrad", lstm_grad_names, 6, 2, 0, 2, lstm_grad_sizes, NULL};

static napi_value LstmGrad(napi_env env, napi_callback_info info) {
  HeapCall c;
  if (heap_call(env, info, &lstm_grad_sig, &c)) {
    captioner_lstm_grad_rows(F(0), F(1), F(2), F(3), F(4), F(5), c.dims[0], c.dims[1], F(6), F(7));
  }
  return NULL;
}

// attn: enc att w | N P A | s
static bool attn_sizes(const int64_t *d, int64_t *z) {
  int64_t np, npa, na;
  if (!mul64(d[0], d[1], &np) || !mul64(np, d[2], &npa) || !mul64(d[0], d[2], &na)) return false;
  int64_t s[4] = {npa, na, d[2], np};
  memcpy(z, s, sizeof s);
  return true;
}
static const char *const attn_names[] = {"encOff", "attOff", "wOff", "N", "P", "A", "sOut"};
static const Sig attn_sig = {"attn", attn_names, 3, 3, 0, 1, attn_sizes, NULL};

static napi_value Attn(napi_env env, napi_callback_info info) {
  HeapCall c;
  if (heap_call(env, info, &attn_sig, &c)) captioner_attn_rows(F(0), F(1), F(2), c.dims[0], c.dims[1], c.dims[2], F(3));
  return NULL;
}

// attnGrad: enc att w ds | N P A | dEnc dAtt dw
static bool attn_grad_sizes(const int64_t *d, int64_t *z) {
  int64_t np, npa, na;
  if (!mul64(d[0], d[1], &np) || !mul64(np, d[2], &npa) || !mul64(d[0], d[2], &na)) return false;
  int64_t s[7] = {npa, na, d[2], np, npa, na, d[2]};
  memcpy(z, s, sizeof s);
  return true;
}
static const char *const attn_grad_names[] = {"encOff", "attOff", "wOff", "dsOff", "N", "P", "A", "dEncOut", "dAttOut", "dwOut"};
static const Sig attn_grad_sig = {"attnGrad", attn_grad_names, 4, 3, 0, 3, attn_grad_sizes, NULL};

static napi_value AttnGrad(napi_env env, napi_callback_info info) {
  HeapCall c;
  if (heap_call(env, info, &attn_grad_sig, &c)) {
    captioner_attn_grad_rows(F(0), F(1), F(2), F(3), c.dims[0], c.dims[1], c.dims[2], F(4), F(5), F(6));
  }
  return NULL;
}

#undef F

// ---------------------------------------------------------------------------------------------------
// Host arrays (plain or shared): data-parallel training's reduction, Adam and copies.

static Span host_span(const void *data, int64_t from, int64_t to, int64_t size) {
  Span s = {(int64_t)(uintptr_t)data + from * size, (int64_t)(uintptr_t)data + to * size};
  return s;
}

// Region 0 [from, to) += regions 1..parts-1, each element accumulated in double in region order, in
// chunks so that every loop vectorises; then each block's sum of squares (sum_sq's fixed order).
CAPTIONER_CLONES
static void reduce_blocks(float *g, int64_t total, int64_t parts, int64_t from, int64_t to, int64_t block, double *sums) {
  enum { CHUNK = 1024 };
  double acc[CHUNK];
  if (parts > 1) {
    for (int64_t i0 = from; i0 < to; i0 += CHUNK) {
      int64_t n = to - i0 < CHUNK ? to - i0 : CHUNK;
      for (int64_t k = 0; k < n; k++) acc[k] = g[i0 + k];
      for (int64_t p = 1; p < parts; p++) {
        const float *r = g + p * total + i0;
        for (int64_t k = 0; k < n; k++) acc[k] += r[k];
      }
      for (int64_t k = 0; k < n; k++) g[i0 + k] = (float)acc[k];
    }
  }
  for (int64_t s0 = from, b = 0; s0 < to; s0 += block, b++) sums[b] = sum_sq(g + s0, (to - s0 < block ? to - s0 : block));
}

static napi_value ReduceBlocks(napi_env env, napi_callback_info info) {
  static const char *fn = "reduceBlocks";
  napi_value argv[7];
  void *g, *sums;
  size_t gLen, sLen;
  int64_t total, parts, from, to, block, span, blocks, need;
  if (!get_args(env, info, fn, 7, argv) || !get_typed(env, argv[0], fn, "grads", napi_float32_array, &g, &gLen) ||
      !get_int(env, argv[1], fn, "total", 0, MAX_SIZE, false, &total) || !get_int(env, argv[2], fn, "parts", 1, MAX_SIZE, false, &parts) ||
      !get_int(env, argv[3], fn, "from", 0, MAX_SAFE, true, &from) || !get_int(env, argv[4], fn, "to", 0, MAX_SAFE, true, &to) ||
      !get_int(env, argv[5], fn, "block", 1, MAX_SIZE, false, &block) ||
      !get_typed(env, argv[6], fn, "sums", napi_float64_array, &sums, &sLen)) {
    return NULL;
  }
  // blocks = ceil((to - from) / block), without overflow
  span = to - from;
  blocks = span / block + (span % block != 0);
  if (from > to || to > total || !mul64(parts, total, &need) || need > (int64_t)gLen || blocks > (int64_t)sLen) {
    napi_throw_range_error(env, NULL, "captioner_native.reduceBlocks: ranges outside the arrays");
    return NULL;
  }
  if (overlap(host_span(g, 0, need, 4), host_span(sums, 0, blocks, 8))) {
    napi_throw_range_error(env, NULL, "captioner_native.reduceBlocks: sums overlaps grads");
    return NULL;
  }
  reduce_blocks((float *)g, total, parts, from, to, block, (double *)sums);
  return NULL;
}

static napi_value AdamArrays(napi_env env, napi_callback_info info) {
  static const char *fn = "adamArrays";
  static const char *names[4] = {"w", "m", "v", "g"};
  static const char *hnames[5] = {"gscale", "beta1", "beta2", "lr", "eps"};
  napi_value argv[11];
  void *a[4];
  size_t len[4];
  int64_t from, to;
  float h[5];
  if (!get_args(env, info, fn, 11, argv)) return NULL;
  for (int i = 0; i < 4; i++) {
    if (!get_typed(env, argv[i], fn, names[i], napi_float32_array, &a[i], &len[i])) return NULL;
  }
  if (!get_int(env, argv[4], fn, "from", 0, MAX_SAFE, true, &from) || !get_int(env, argv[5], fn, "to", 0, MAX_SAFE, true, &to)) return NULL;
  for (int i = 0; i < 5; i++) {
    if (!get_float(env, argv[6 + i], fn, hnames[i], &h[i])) return NULL;
  }
  bool inside = from <= to;
  for (int i = 0; i < 4; i++) inside = inside && to <= (int64_t)len[i];
  if (!inside) {
    napi_throw_range_error(env, NULL, "captioner_native.adamArrays: the range lies outside the arrays");
    return NULL;
  }
  for (int i = 0; i < 4; i++) {
    for (int j = i + 1; j < 4; j++) {
      if (overlap(host_span(a[i], from, to, 4), host_span(a[j], from, to, 4))) {
        napi_throw_range_error(env, NULL, "captioner_native.adamArrays: w, m, v and g must not overlap");
        return NULL;
      }
    }
  }
  float *w = (float *)a[0] + from, *m = (float *)a[1] + from, *vv = (float *)a[2] + from;
  adam_update(w, (const float *)a[3] + from, m, vv, to - from, h[0], h[1], h[2], h[3], h[4], w, m, vv);
  return NULL;
}

// memmove between two Float32Arrays of one length, whatever their buffers: V8 copies to and from a
// SharedArrayBuffer element by element (relaxed atomics), several times slower than this for the 23 MB of
// weights and gradients data-parallel training moves between shared memory and each wasm heap per step.
static napi_value Copy(napi_env env, napi_callback_info info) {
  napi_value argv[2];
  void *dst, *src;
  size_t dLen, sLen;
  if (!get_args(env, info, "copy", 2, argv) || !get_typed(env, argv[0], "copy", "dst", napi_float32_array, &dst, &dLen) ||
      !get_typed(env, argv[1], "copy", "src", napi_float32_array, &src, &sLen)) {
    return NULL;
  }
  if (dLen != sLen) {
    napi_throw_range_error(env, NULL, "captioner_native.copy: the arrays differ in length");
    return NULL;
  }
  if (dLen > 0) memmove(dst, src, dLen * sizeof(float));
  return NULL;
}

#define METHOD(name, fn) {name, NULL, fn, NULL, NULL, NULL, napi_default, NULL}

NAPI_MODULE_INIT() {
  napi_property_descriptor props[] = {
      METHOD("load", Load),
      METHOD("setThreads", SetThreads),
      METHOD("shareThreads", ShareThreads),
      METHOD("threadInfo", ThreadInfo),
      METHOD("sgemm", Sgemm),
      METHOD("xent", Xent),
      METHOD("sumSquares", SumSquares),
      METHOD("adam", Adam),
      METHOD("reduceBlocks", ReduceBlocks),
      METHOD("adamArrays", AdamArrays),
      METHOD("copy", Copy),
      METHOD("attn", Attn),
      METHOD("attnGrad", AttnGrad),
      METHOD("lstm", Lstm),
      METHOD("lstmGrad", LstmGrad),
  };
  if (napi_define_properties(env, exports, sizeof props / sizeof props[0], props) != napi_ok) return NULL;
  // one more JS thread holds the addon until its environment is torn down (a worker's exit)
  if (napi_add_env_cleanup_hook(env, holder_gone, NULL) != napi_ok) return NULL;
  pthread_mutex_lock(&lock);
  holders++;
  apply_threads_locked();
  pthread_mutex_unlock(&lock);
  return exports;
}
