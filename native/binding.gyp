# The optional native addon (captioner_native.node): BLAS matrix products on the wasm backend's heap.
# Built at install by scripts/build-native.mjs when a C compiler and Node's headers are there; it links
# nothing at build time (OpenBLAS is opened with dlopen when the addon loads), so it builds anywhere
# node-gyp does and a machine without OpenBLAS simply runs wasm's own kernels.
{
  "targets": [
    {
      "target_name": "captioner_native",
      "sources": ["blas.c"],
      "cflags": ["-O3", "-ffast-math", "-std=gnu11", "-Wall", "-Wextra"],
      "libraries": ["-ldl", "-lm"]
    }
  ]
}
