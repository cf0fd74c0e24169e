# The optional native addon (captioner_native.node): BLAS matrix products on the wasm backend's heap.
# Built at install by scripts/build-native.mjs when a C compiler and Node's headers are there; it links
# nothing at build time (OpenBLAS is opened with dlopen when the addon loads), so it builds anywhere
# node-gyp does and a machine without OpenBLAS simply runs wasm's own kernels.
#
# Two translation units with their own flags: fused.c (the loops built around exp) with -ffast-math,
# blas.c (the entry points, argument checks, Adam, the reduction, sums of squares) without it and without
# FMA contraction, so that its results are exact IEEE float arithmetic in a fixed order (see fused.h).
{
  "targets": [
    {
      "target_name": "captioner_fused",
      "type": "static_library",
      "sources": ["fused.c"],
      "cflags": ["-O3", "-ffast-math", "-std=gnu11", "-Wall", "-Wextra"],
      "xcode_settings": {"OTHER_CFLAGS": ["-O3", "-ffast-math", "-std=gnu11", "-Wall", "-Wextra"]}
    },
    {
      "target_name": "captioner_native",
      "sources": ["blas.c"],
      "dependencies": ["captioner_fused"],
      "cflags": ["-O3", "-fno-math-errno", "-ffp-contract=off", "-std=gnu11", "-Wall", "-Wextra"],
      "xcode_settings": {"OTHER_CFLAGS": ["-O3", "-fno-math-errno", "-ffp-contract=off", "-std=gnu11", "-Wall", "-Wextra"]},
      "libraries": ["-ldl", "-lm"]
    }
  ]
}
