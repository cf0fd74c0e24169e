// captioner_native: the matrix products of the tfjs wasm backend, run by the machine's OpenBLAS on the
// wasm heap itself (no copies), and the hot elementwise loops of training as single vectorised passes
// (softmax cross-entropy, Adam, the LSTM cell, attention scores, each with its gradient where it has one,
// and data-parallel training's reduction and Adam on shared host arrays). OpenBLAS is opened with dlopen
// at load, so this file needs no BLAS headers to build and the package installs where OpenBLAS is absent
// (load() then says why).
//
// JS API (see src/tf/native.ts):
//   load(paths: string[]) -> { ok: true, library, config } | { ok: false, reason }
//   setThreads(n)                     OpenBLAS threads for this process (process-wide in OpenBLAS)
//   sgemm(heap: ArrayBuffer, transA, transB, M, N, K, alpha, aByteOff, lda, bByteOff, ldb, beta,
//         cByteOff, ldc)              C = alpha op(A) op(B) + beta C, row-major float32, offsets in bytes
//   xent(heap, zOff, biasOff, targetsOff, M, V, scale, dOff, dbOff) -> sum over rows of the cross-entropy
//                                     of softmax(z + bias) against int32 targets (a target outside [0, V)
//                                     picks nothing, as tf.oneHot does); writes d = scale (softmax - onehot)
//                                     [M, V] and db = its column sums [V] (d may be z: in place)
//   sumSquares(heap, off, n) -> the sum of x^2 over n floats (in double)
//   adam(heap, xOff, gOff, mOff, vOff, n, gscale, beta1, beta2, lr, eps, xOut, mOut, vOut): one Adam
//                                     update with the gradient scaled by gscale (clipping), written to
//                                     the three outputs (they may be the inputs)
//   reduceBlocks(grads: Float32Array, total, parts, from, to, block, sums: Float64Array): sums the first
//                                     `parts` regions of `total` floats into region 0 over [from, to)
//                                     (accumulated in double, region order), and writes each block's sum
//                                     of squares (in double) to sums; the typed arrays may be shared
//   adamArrays(w, m, v, g: Float32Array, from, to, gscale, beta1, beta2, lr, eps): adam's update in
//                                     place over [from, to) of host (or shared) arrays
//   attn(heap, encOff, attOff, wOff, N, P, A, sOut): attention scores s[n, p] = w . tanh(enc[n, p] + att[n])
//                                     for enc [N, P, A], att [N, A], w [A] -> s [N, P]
//   attnGrad(heap, encOff, attOff, wOff, dsOff, N, P, A, dEncOut, dAttOut, dwOut): its backward pass,
//                                     recomputing the tanh: dEnc [N, P, A], dAtt [N, A], dw [A]
//   lstm(heap, zxOff, recOff, cOff, N, U, hOut, cOut): one LSTM cell on pre-activations zx + rec [N, 4U]
//                                     (gates i, f, g, o) and cell state c [N, U]; writes h and c' [N, U]
//   lstmGrad(heap, zxOff, recOff, cOff, c2Off, dhOff, dc2Off, N, U, dzOut, dcOut): its backward pass,
//                                     recomputing the gates: dz [N, 4U] (for zx and rec) and dc [N, U]
#define _GNU_SOURCE
#include <dlfcn.h>
#include <node_api.h>
#include <pthread.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <math.h>
#include <string.h>

enum { RowMajor = 101, NoTrans = 111, Trans = 112 };
typedef void (*sgemm_fn)(int order, int ta, int tb, int m, int n, int k, float alpha, const float *a, int lda,
                         const float *b, int ldb, float beta, float *c, int ldc);
typedef void (*set_threads_fn)(int);
typedef char *(*get_config_fn)(void);

#define SMALL_PRODUCT (64.0 * 1024 * 1024)

static pthread_mutex_t lock = PTHREAD_MUTEX_INITIALIZER;
static void *handle = NULL;
static sgemm_fn sgemm = NULL;
static set_threads_fn set_threads = NULL;
static get_config_fn get_config = NULL;
static int (*get_threads)(void) = NULL;
static char library[1024] = "";

#define CALL(env, call)                                                   \
  do {                                                                    \
    if ((call) != napi_ok) {                                              \
      napi_throw_error((env), NULL, "captioner_native: N-API call failed"); \
      return NULL;                                                        \
    }                                                                     \
  } while (0)

static napi_value make_string(napi_env env, const char *s) {
  napi_value v;
  napi_create_string_utf8(env, s, NAPI_AUTO_LENGTH, &v);
  return v;
}

// load(paths): open the first library that has cblas_sgemm. Idempotent and shared by every thread.
static napi_value Load(napi_env env, napi_callback_info info) {
  size_t argc = 1;
  napi_value argv[1];
  CALL(env, napi_get_cb_info(env, info, &argc, argv, NULL, NULL));
  char reason[2048] = "no library to try";
  pthread_mutex_lock(&lock);
  if (!sgemm && argc >= 1) {
    uint32_t count = 0;
    napi_get_array_length(env, argv[0], &count);
    reason[0] = 0;
    for (uint32_t i = 0; i < count && !sgemm; i++) {
      napi_value item;
      char path[1024];
      size_t len = 0;
      if (napi_get_element(env, argv[0], i, &item) != napi_ok) continue;
      if (napi_get_value_string_utf8(env, item, path, sizeof path, &len) != napi_ok) continue;
      void *h = dlopen(path, RTLD_NOW | RTLD_LOCAL);
      if (!h) {
        const char *e = dlerror();
        snprintf(reason + strlen(reason), sizeof reason - strlen(reason), "%s%s", reason[0] ? "; " : "", e ? e : path);
        continue;
      }
      sgemm_fn f = (sgemm_fn)dlsym(h, "cblas_sgemm");
      if (!f) {
        snprintf(reason + strlen(reason), sizeof reason - strlen(reason), "%s%s has no cblas_sgemm", reason[0] ? "; " : "", path);
        dlclose(h);
        continue;
      }
      handle = h;
      sgemm = f;
      set_threads = (set_threads_fn)dlsym(h, "openblas_set_num_threads");
      get_config = (get_config_fn)dlsym(h, "openblas_get_config");
      get_threads = (int (*)(void))dlsym(h, "openblas_get_num_threads");
      snprintf(library, sizeof library, "%s", path);
    }
  }
  napi_value out, ok;
  CALL(env, napi_create_object(env, &out));
  CALL(env, napi_get_boolean(env, sgemm != NULL, &ok));
  napi_set_named_property(env, out, "ok", ok);
  if (sgemm) {
    napi_set_named_property(env, out, "library", make_string(env, library));
    napi_set_named_property(env, out, "config", make_string(env, get_config ? get_config() : ""));
  } else {
    napi_set_named_property(env, out, "reason", make_string(env, reason));
  }
  pthread_mutex_unlock(&lock);
  return out;
}

static napi_value SetThreads(napi_env env, napi_callback_info info) {
  size_t argc = 1;
  napi_value argv[1];
  int32_t n = 1;
  CALL(env, napi_get_cb_info(env, info, &argc, argv, NULL, NULL));
  if (argc >= 1) napi_get_value_int32(env, argv[0], &n);
  int before = get_threads ? get_threads() : 0;
  if (set_threads && n > 0) set_threads(n);
  napi_value r;
  napi_create_int32(env, before, &r);  // the count before (0: unknown, or not OpenBLAS)
  return r;
}

// Reads argv[i] as int32 / double; any mistake is a thrown TypeError (the JS wrapper never makes one).
static bool ints(napi_env env, napi_value *argv, size_t from, size_t n, int64_t *out) {
  for (size_t i = 0; i < n; i++) {
    if (napi_get_value_int64(env, argv[from + i], &out[i]) != napi_ok) return false;
  }
  return true;
}

static bool heap_of(napi_env env, napi_value v, char **data, size_t *bytes) {
  void *p = NULL;
  bool is_ab = false;
  if (napi_is_arraybuffer(env, v, &is_ab) != napi_ok || !is_ab) return false;
  if (napi_get_arraybuffer_info(env, v, &p, bytes) != napi_ok || !p) return false;
  *data = (char *)p;
  return true;
}

// Every matrix must lie inside the heap: a wrong offset is an exception, never a stray write.
static bool inside(size_t heap, int64_t off, int64_t rows, int64_t ld, int64_t cols) {
  if (off < 0 || rows < 0 || cols < 0 || ld < cols || off % 4 != 0) return false;
  if (rows == 0 || cols == 0) return true;
  int64_t last = off + ((rows - 1) * ld + cols) * 4;
  return last <= (int64_t)heap;
}

// The shared prologue of the heap entry points (all but sgemm), whose arguments are: the heap, `nin`
// input byte offsets, `ndims` non-negative sizes, `nh` numbers (doubles), `nout` output byte offsets.
// `sizes` gives every array's element count (4-byte elements) from the sizes, inputs first; each array
// must lie inside the heap. False after throwing the JS error (TypeError for bad arguments, RangeError
// for an array outside the heap).
typedef struct {
  char *heap;
  int64_t dims[4];
  double h[5];
  int64_t off[12];
} HeapCall;

static bool heap_call(napi_env env, napi_callback_info info, const char *name, size_t nin, size_t ndims, size_t nh,
                      size_t nout, void (*sizes)(const int64_t *dims, int64_t *out), HeapCall *c) {
  size_t want = 1 + nin + ndims + nh + nout, argc = 16;
  napi_value argv[16];
  size_t bytes;
  char msg[96];
  int64_t size[12];
  if (napi_get_cb_info(env, info, &argc, argv, NULL, NULL) != napi_ok) {
    napi_throw_error(env, NULL, "captioner_native: N-API call failed");
    return false;
  }
  bool ok = argc == want && heap_of(env, argv[0], &c->heap, &bytes) && ints(env, argv, 1, nin, c->off) &&
            ints(env, argv, 1 + nin, ndims, c->dims) && ints(env, argv, 1 + nin + ndims + nh, nout, c->off + nin);
  for (size_t i = 0; ok && i < ndims; i++) ok = c->dims[i] >= 0;
  for (size_t i = 0; ok && i < nh; i++) ok = napi_get_value_double(env, argv[1 + nin + ndims + i], &c->h[i]) == napi_ok;
  if (!ok) {
    snprintf(msg, sizeof msg, "captioner_native.%s: bad arguments", name);
    napi_throw_type_error(env, NULL, msg);
    return false;
  }
  sizes(c->dims, size);
  for (size_t i = 0; i < nin + nout; i++) {
    if (!inside(bytes, c->off[i], 1, size[i], size[i])) {
      snprintf(msg, sizeof msg, "captioner_native.%s: an array lies outside the heap", name);
      napi_throw_range_error(env, NULL, msg);
      return false;
    }
  }
  return true;
}

#define F(i) ((float *)(c.heap + c.off[i]))

static napi_value Sgemm(napi_env env, napi_callback_info info) {
  size_t argc = 14;
  napi_value argv[14];
  CALL(env, napi_get_cb_info(env, info, &argc, argv, NULL, NULL));
  if (argc != 14 || !sgemm) {
    napi_throw_error(env, NULL, "captioner_native.sgemm: bad call or no BLAS loaded");
    return NULL;
  }
  char *heap;
  size_t bytes;
  bool ta, tb;
  int64_t v[3];  // M N K
  double alpha, beta;
  int64_t aOff, lda, bOff, ldb, cOff, ldc;
  if (!heap_of(env, argv[0], &heap, &bytes) || napi_get_value_bool(env, argv[1], &ta) != napi_ok ||
      napi_get_value_bool(env, argv[2], &tb) != napi_ok || !ints(env, argv, 3, 3, v) ||
      napi_get_value_double(env, argv[6], &alpha) != napi_ok || napi_get_value_int64(env, argv[7], &aOff) != napi_ok ||
      napi_get_value_int64(env, argv[8], &lda) != napi_ok || napi_get_value_int64(env, argv[9], &bOff) != napi_ok ||
      napi_get_value_int64(env, argv[10], &ldb) != napi_ok || napi_get_value_double(env, argv[11], &beta) != napi_ok ||
      napi_get_value_int64(env, argv[12], &cOff) != napi_ok || napi_get_value_int64(env, argv[13], &ldc) != napi_ok) {
    napi_throw_type_error(env, NULL, "captioner_native.sgemm: bad arguments");
    return NULL;
  }
  int64_t M = v[0], N = v[1], K = v[2];
  // row-major: A is [M, K] (or [K, M] when transposed), B [K, N] (or [N, K]), C [M, N]
  if (M > INT32_MAX || N > INT32_MAX || K > INT32_MAX || !inside(bytes, aOff, ta ? K : M, lda, ta ? M : K) ||
      !inside(bytes, bOff, tb ? N : K, ldb, tb ? K : N) || !inside(bytes, cOff, M, ldc, N)) {
    napi_throw_range_error(env, NULL, "captioner_native.sgemm: a matrix lies outside the heap");
    return NULL;
  }
  if (M > 0 && N > 0) {
    // OpenBLAS splits anything above 262,144 multiply-adds over its threads; below about 64M (the LSTM's
    // per-step [64, 256] x [256, 1024]) the split costs more than it gains (measured: 2 threads 35%
    // slower than 1 on 2 cores), so such products run on the calling thread alone.
    int threads = get_threads ? get_threads() : 1;
    bool alone = threads > 1 && set_threads && (double)M * (double)N * (double)K < SMALL_PRODUCT;
    if (alone) set_threads(1);
    sgemm(RowMajor, ta ? Trans : NoTrans, tb ? Trans : NoTrans, (int)M, (int)N, (int)K, (float)alpha,
          (const float *)(heap + aOff), (int)lda, (const float *)(heap + bOff), (int)ldb, (float)beta,
          (float *)(heap + cOff), (int)ldc);
    if (alone) set_threads(threads);
  }
  return NULL;
}

// One row of the fused softmax cross-entropy. Built for several instruction sets (the loader picks the
// machine's best); with -ffast-math the exp loop vectorises through glibc's libmvec where it exists.
__attribute__((target_clones("avx512f", "avx2", "default")))
static double xent_row(const float *z, const float *bias, int32_t target, int64_t V, float scale, float *d, float *db) {
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

// xent: z bias targets | M V | scale | d db
static void xent_sizes(const int64_t *d, int64_t *z) {
  int64_t s[5] = {d[0] * d[1], d[1], d[0], d[0] * d[1], d[1]};
  memcpy(z, s, sizeof s);
}

static napi_value Xent(napi_env env, napi_callback_info info) {
  HeapCall c;
  if (!heap_call(env, info, "xent", 3, 2, 1, 2, xent_sizes, &c)) return NULL;
  int64_t M = c.dims[0], V = c.dims[1];
  const int32_t *targets = (const int32_t *)(c.heap + c.off[2]);
  float *d = F(3), *db = F(4);
  for (int64_t j = 0; j < V; j++) db[j] = 0.0f;
  double total = 0.0;
  for (int64_t i = 0; i < M; i++) total += xent_row(F(0) + i * V, F(1), targets[i], V, (float)c.h[0], d + i * V, db);
  napi_value r;
  napi_create_double(env, total, &r);
  return r;
}

__attribute__((target_clones("avx512f", "avx2", "default")))
static double sum_squares(const float *x, int64_t n) {
  double total = 0.0;
  for (int64_t i0 = 0; i0 < n; i0 += 4096) {  // float partial sums per block, summed in double
    int64_t i1 = i0 + 4096 < n ? i0 + 4096 : n;
    float s = 0.0f;
    for (int64_t i = i0; i < i1; i++) s += x[i] * x[i];
    total += s;
  }
  return total;
}

// sumSquares: x | n
static void one_size(const int64_t *d, int64_t *z) { z[0] = d[0]; }

static napi_value SumSquares(napi_env env, napi_callback_info info) {
  HeapCall c;
  if (!heap_call(env, info, "sumSquares", 1, 1, 0, 0, one_size, &c)) return NULL;
  napi_value r;
  napi_create_double(env, sum_squares(F(0), c.dims[0]), &r);
  return r;
}

__attribute__((target_clones("avx512f", "avx2", "default")))
static void adam_update(const float *x, const float *g, const float *m, const float *v, int64_t n, float gscale, float b1,
                        float b2, float lr, float eps, float *xo, float *mo, float *vo) {
  // element i reads and writes index i only, so in-place updates (xo == x ...) are safe vectorised
#pragma GCC ivdep
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
static void seven_sizes(const int64_t *d, int64_t *z) {
  for (int i = 0; i < 7; i++) z[i] = d[0];
}

static napi_value Adam(napi_env env, napi_callback_info info) {
  HeapCall c;
  if (heap_call(env, info, "adam", 4, 1, 5, 3, seven_sizes, &c)) {
    adam_update(F(0), F(1), F(2), F(3), c.dims[0], (float)c.h[0], (float)c.h[1], (float)c.h[2], (float)c.h[3], (float)c.h[4],
                F(4), F(5), F(6));
  }
  return NULL;
}

// A Float32Array's (or Float64Array's) data and length, whatever its buffer (ArrayBuffer or shared).
static bool typed_of(napi_env env, napi_value v, napi_typedarray_type want, void **data, size_t *length) {
  bool is = false;
  napi_typedarray_type type;
  napi_value buffer;
  size_t offset;
  if (napi_is_typedarray(env, v, &is) != napi_ok || !is) return false;
  if (napi_get_typedarray_info(env, v, &type, length, data, &buffer, &offset) != napi_ok || type != want) return false;
  return *data != NULL || *length == 0;
}

__attribute__((target_clones("avx512f", "avx2", "default")))
static void reduce_blocks(float *g, int64_t total, int64_t parts, int64_t from, int64_t to, int64_t block, double *sums) {
  for (int64_t s0 = from, b = 0; s0 < to; s0 += block, b++) {
    int64_t s1 = s0 + block < to ? s0 + block : to;
    double sq = 0.0;
    if (parts == 1) {
      for (int64_t i = s0; i < s1; i++) sq += (double)g[i] * (double)g[i];
    } else {
      for (int64_t i = s0; i < s1; i++) {
        double acc = g[i];
        for (int64_t p = 1; p < parts; p++) acc += g[p * total + i];
        float f = (float)acc;
        g[i] = f;
        sq += (double)f * (double)f;
      }
    }
    sums[b] = sq;
  }
}

static napi_value ReduceBlocks(napi_env env, napi_callback_info info) {
  size_t argc = 7;
  napi_value argv[7];
  CALL(env, napi_get_cb_info(env, info, &argc, argv, NULL, NULL));
  void *g, *sums;
  size_t gLen, sLen;
  int64_t v[5];  // total parts from to block
  if (argc != 7 || !typed_of(env, argv[0], napi_float32_array, &g, &gLen) || !ints(env, argv, 1, 5, v) ||
      !typed_of(env, argv[6], napi_float64_array, &sums, &sLen)) {
    napi_throw_type_error(env, NULL, "captioner_native.reduceBlocks: bad arguments");
    return NULL;
  }
  int64_t total = v[0], parts = v[1], from = v[2], to = v[3], block = v[4];
  if (total < 0 || parts < 1 || from < 0 || to < from || to > total || block < 1 || (double)parts * total > (double)gLen ||
      (to - from + block - 1) / block > (int64_t)sLen) {
    napi_throw_range_error(env, NULL, "captioner_native.reduceBlocks: ranges outside the arrays");
    return NULL;
  }
  reduce_blocks((float *)g, total, parts, from, to, block, (double *)sums);
  return NULL;
}

static napi_value AdamArrays(napi_env env, napi_callback_info info) {
  size_t argc = 11;
  napi_value argv[11];
  CALL(env, napi_get_cb_info(env, info, &argc, argv, NULL, NULL));
  void *a[4];  // w m v g
  size_t len[4];
  int64_t r[2];  // from to
  double h[5];   // gscale beta1 beta2 lr eps
  bool ok = argc == 11 && ints(env, argv, 4, 2, r);
  for (int i = 0; ok && i < 4; i++) ok = typed_of(env, argv[i], napi_float32_array, &a[i], &len[i]);
  for (int i = 0; ok && i < 5; i++) ok = napi_get_value_double(env, argv[6 + i], &h[i]) == napi_ok;
  if (!ok) {
    napi_throw_type_error(env, NULL, "captioner_native.adamArrays: bad arguments");
    return NULL;
  }
  for (int i = 0; i < 4; i++) ok = ok && r[0] >= 0 && r[1] >= r[0] && r[1] <= (int64_t)len[i];
  if (!ok) {
    napi_throw_range_error(env, NULL, "captioner_native.adamArrays: the range lies outside the arrays");
    return NULL;
  }
  float *w = (float *)a[0] + r[0], *m = (float *)a[1] + r[0], *vv = (float *)a[2] + r[0];
  adam_update(w, (const float *)a[3] + r[0], m, vv, r[1] - r[0], (float)h[0], (float)h[1], (float)h[2], (float)h[3],
              (float)h[4], w, m, vv);
  return NULL;
}

// memmove between two Float32Arrays of one length, whatever their buffers: V8 copies to and from a
// SharedArrayBuffer element by element (relaxed atomics), several times slower than this for the 23 MB of
// weights and gradients data-parallel training moves between shared memory and each wasm heap per step.
static napi_value Copy(napi_env env, napi_callback_info info) {
  size_t argc = 2;
  napi_value argv[2];
  CALL(env, napi_get_cb_info(env, info, &argc, argv, NULL, NULL));
  void *dst, *src;
  size_t dLen, sLen;
  if (argc != 2 || !typed_of(env, argv[0], napi_float32_array, &dst, &dLen) || !typed_of(env, argv[1], napi_float32_array, &src, &sLen)) {
    napi_throw_type_error(env, NULL, "captioner_native.copy: bad arguments");
    return NULL;
  }
  if (dLen != sLen) {
    napi_throw_range_error(env, NULL, "captioner_native.copy: the arrays differ in length");
    return NULL;
  }
  if (dLen > 0) memmove(dst, src, dLen * sizeof(float));
  return NULL;
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
// same pointers formed inside the row loop).
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

__attribute__((target_clones("avx512f", "avx2", "default")))
static void lstm_rows(const float *zx, const float *rec, const float *c, int64_t N, int64_t U, float *h, float *c2) {
  for (int64_t r = 0; r < N; r++) lstm_row(zx + r * 4 * U, rec + r * 4 * U, c + r * U, U, h + r * U, c2 + r * U);
}

__attribute__((target_clones("avx512f", "avx2", "default")))
static void lstm_grad_rows(const float *zx, const float *rec, const float *c, const float *c2, const float *dh,
                           const float *dc2, int64_t N, int64_t U, float *dz, float *dc) {
  for (int64_t r = 0; r < N; r++) {
    lstm_grad_row(zx + r * 4 * U, rec + r * 4 * U, c + r * U, c2 + r * U, dh + r * U, dc2 + r * U, U, dz + r * 4 * U, dc + r * U);
  }
}

// lstm: zx rec c | N U | h c2
static void lstm_sizes(const int64_t *d, int64_t *z) {
  int64_t s[5] = {d[0] * 4 * d[1], d[0] * 4 * d[1], d[0] * d[1], d[0] * d[1], d[0] * d[1]};
  memcpy(z, s, sizeof s);
}

static napi_value Lstm(napi_env env, napi_callback_info info) {
  HeapCall c;
  if (heap_call(env, info, "lstm", 3, 2, 0, 2, lstm_sizes, &c)) lstm_rows(F(0), F(1), F(2), c.dims[0], c.dims[1], F(3), F(4));
  return NULL;
}

// lstmGrad: zx rec c c2 dh dc2 | N U | dz dc
static void lstm_grad_sizes(const int64_t *d, int64_t *z) {
  int64_t w = d[0] * 4 * d[1], n = d[0] * d[1];
  int64_t s[8] = {w, w, n, n, n, n, w, n};
  memcpy(z, s, sizeof s);
}

static napi_value LstmGrad(napi_env env, napi_callback_info info) {
  HeapCall c;
  if (heap_call(env, info, "lstmGrad", 6, 2, 0, 2, lstm_grad_sizes, &c)) {
    lstm_grad_rows(F(0), F(1), F(2), F(3), F(4), F(5), c.dims[0], c.dims[1], F(6), F(7));
  }
  return NULL;
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

__attribute__((target_clones("avx512f", "avx2", "default")))
static void attn_rows(const float *enc, const float *att, const float *w, int64_t N, int64_t P, int64_t A, float *s) {
  for (int64_t n = 0; n < N; n++) {
    for (int64_t p = 0; p < P; p++) s[n * P + p] = attn_row(enc + (n * P + p) * A, att + n * A, w, A);
  }
}

__attribute__((target_clones("avx512f", "avx2", "default")))
static void attn_grad_rows(const float *enc, const float *att, const float *w, const float *ds, int64_t N, int64_t P,
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

// attn: enc att w | N P A | s
static void attn_sizes(const int64_t *d, int64_t *z) {
  int64_t s[4] = {d[0] * d[1] * d[2], d[0] * d[2], d[2], d[0] * d[1]};
  memcpy(z, s, sizeof s);
}

static napi_value Attn(napi_env env, napi_callback_info info) {
  HeapCall c;
  if (heap_call(env, info, "attn", 3, 3, 0, 1, attn_sizes, &c)) attn_rows(F(0), F(1), F(2), c.dims[0], c.dims[1], c.dims[2], F(3));
  return NULL;
}

// attnGrad: enc att w ds | N P A | dEnc dAtt dw
static void attn_grad_sizes(const int64_t *d, int64_t *z) {
  int64_t s[7] = {d[0] * d[1] * d[2], d[0] * d[2], d[2], d[0] * d[1], d[0] * d[1] * d[2], d[0] * d[2], d[2]};
  memcpy(z, s, sizeof s);
}

static napi_value AttnGrad(napi_env env, napi_callback_info info) {
  HeapCall c;
  if (heap_call(env, info, "attnGrad", 4, 3, 0, 3, attn_grad_sizes, &c)) {
    attn_grad_rows(F(0), F(1), F(2), F(3), c.dims[0], c.dims[1], c.dims[2], F(4), F(5), F(6));
  }
  return NULL;
}

#undef F

#define METHOD(name, fn) {name, NULL, fn, NULL, NULL, NULL, napi_default, NULL}

NAPI_MODULE_INIT() {
  napi_property_descriptor props[] = {
      METHOD("load", Load),
      METHOD("setThreads", SetThreads),
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
  napi_define_properties(env, exports, sizeof props / sizeof props[0], props);
  return exports;
}
