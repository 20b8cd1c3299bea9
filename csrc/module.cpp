// Python module stub of advsimplex._C: importing it loads the shared library, whose static
// initialisers run the TORCH_LIBRARY / TORCH_LIBRARY_IMPL registrations of every op file in csrc/.
#include <Python.h>

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
