// Python module stub of advsimplex._C: importing it loads the shared library, whose static
// initialisers run the TORCH_LIBRARY_FRAGMENT / TORCH_LIBRARY_IMPL registrations of every op
// file in csrc/ (csrc/<op>.cpp: schemas + CPU kernels, csrc/<op>.cu: CUDA kernels).
#include <Python.h>
#include <torch/library.h>

// The advsimplex operator namespace; each op file adds its schemas with TORCH_LIBRARY_FRAGMENT.
TORCH_LIBRARY(advsimplex, m) {}

extern "C" {
PyObject* PyInit__C(void) {
  static struct PyModuleDef module_def = {
      PyModuleDef_HEAD_INIT,
      "_C",  // name
      "advsimplex compiled kernels (ops live under torch.ops.advsimplex)",
      -1,
      nullptr,
  };
  return PyModule_Create(&module_def);
}
}
