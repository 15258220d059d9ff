// The eager hot path of the plugin's apply_weights, as one CPython function:
//
//   eager_call(layer, x, bias, plan_attribute) -> Tensor | None
//
// It returns None unless the call is the serving case the plan in layer.__dict__[plan_attribute]
// was made for, and then returns the plan's runner(x, M, bias). Why C: every Python-level tensor
// attribute (x.dtype, x.shape, x.is_contiguous(), p.data_ptr()) costs 60-200 ns through torch's
// __torch_function__ checks (timed on the CPU machine), the same checks in Python cost 1.3-1.4 us
// there, and on the H100 the plugin measured 2.4-2.9 us above calling FlashInfer by hand with
// them (the issue allows 3). Read here from the TensorImpl, with the layer's dict, they cost about
// 0.1 us. The checks are the Python path's (kernels._PlannedEagerApply._apply); anything else
// returns None and the caller takes that path, which checks again and names what is wrong.
//
// plan: a tuple (k, act_dtype, n, weight_ptr, weight_scale_ptr, input_scale_ptr or 0, runner).
// x: exactly a torch.Tensor (tensor subclasses, e.g. a tracer's, take the Python path), of
//    act_dtype, 2-D [M, k], contiguous.
// bias: None or exactly a floating tensor of shape [n] on x's device.
// layer: an object with a __dict__ (an nn.Module) holding the plan (none yet: None) and
//    _parameters, whose "weight", "weight_scale" (and "input_scale" when the plan's pointer is not
//    0) must still hold the storage the plan's runner was bound to, on x's device, so a replaced
//    Parameter or a swapped .data is seen at the next call.
// A malformed plan raises TypeError (a bug in the caller, not bad user input).

#include <Python.h>
#include <torch/csrc/DynamicTypes.h>
#include <torch/csrc/autograd/python_variable.h>

#include <cstdint>

namespace {

constexpr Py_ssize_t kPlanSize = 7;
PyObject* g_weight = nullptr;        // interned "weight"
PyObject* g_weight_scale = nullptr;  // interned "weight_scale"
PyObject* g_input_scale = nullptr;   // interned "input_scale"
PyObject* g_parameters = nullptr;    // interned "_parameters"

// The plan's integer fields, read once; false with a TypeError set when one is not an integer.
struct PlanFields {
  long long k, n;
  unsigned long long weight, weight_scale, input_scale;
};

bool read_fields(PyObject* plan, PlanFields* fields) {
  fields->k = PyLong_AsLongLong(PyTuple_GET_ITEM(plan, 0));
  fields->n = PyLong_AsLongLong(PyTuple_GET_ITEM(plan, 2));
  fields->weight = PyLong_AsUnsignedLongLong(PyTuple_GET_ITEM(plan, 3));
  fields->weight_scale = PyLong_AsUnsignedLongLong(PyTuple_GET_ITEM(plan, 4));
  fields->input_scale = PyLong_AsUnsignedLongLong(PyTuple_GET_ITEM(plan, 5));
  return PyErr_Occurred() == nullptr;
}

// True when params[name] is a tensor holding storage at `expected` on x's device.
bool holds(PyObject* params, PyObject* name, unsigned long long expected,
           const at::Tensor& rows) {
  PyObject* tensor = PyDict_GetItemWithError(params, name);  // borrowed; str keys never raise
  if (tensor == nullptr || !THPVariable_Check(tensor)) {
    return false;
  }
  const at::Tensor& value = THPVariable_Unpack(tensor);
  return value.has_storage() && value.device() == rows.device() &&
         reinterpret_cast<uintptr_t>(value.data_ptr()) == expected;
}

// No Python runs in here: x and bias must be exact tensors (nn.Parameter counts as one in
// torch's C API), whose metadata is read from the TensorImpl without dispatch, so the layer's
// dicts cannot change under the check.
bool is_serving_call(PyObject* plan, const PlanFields& fields, PyObject* x, PyObject* bias,
                     PyObject* params) {
  if (!THPVariable_CheckExact(x) || !PyDict_CheckExact(params)) {
    return false;
  }
  const at::Tensor& rows = THPVariable_Unpack(x);
  if (rows.layout() != at::kStrided || rows.is_nested()) {  // sparse, nested: not [M, K] rows
    return false;
  }
  if (reinterpret_cast<PyObject*>(torch::getTHPDtype(rows.scalar_type())) !=
          PyTuple_GET_ITEM(plan, 1) ||
      rows.dim() != 2 || rows.size(1) != fields.k || !rows.is_contiguous()) {
    return false;
  }
  if (bias != Py_None) {
    if (!THPVariable_CheckExact(bias)) {
      return false;
    }
    const at::Tensor& b = THPVariable_Unpack(bias);
    if (b.layout() != at::kStrided || b.is_nested() || b.dim() != 1 || b.size(0) != fields.n ||
        !at::isFloatingType(b.scalar_type()) || b.device() != rows.device()) {
      return false;
    }
  }
  return holds(params, g_weight, fields.weight, rows) &&
         holds(params, g_weight_scale, fields.weight_scale, rows) &&
         (fields.input_scale == 0 || holds(params, g_input_scale, fields.input_scale, rows));
}

// The layer's plan and parameters (borrowed from its __dict__), or false: no plan yet, or not a
// module's dict. `dict` is a new reference the caller releases.
bool layer_entries(PyObject* layer, PyObject* plan_attribute, PyObject** dict, PyObject** plan,
                   PyObject** params) {
  *dict = PyObject_GenericGetDict(layer, nullptr);
  if (*dict == nullptr) {
    PyErr_Clear();
    return false;
  }
  *plan = PyDict_GetItemWithError(*dict, plan_attribute);
  *params = *plan == nullptr ? nullptr : PyDict_GetItemWithError(*dict, g_parameters);
  if (*params == nullptr) {
    PyErr_Clear();
    return false;
  }
  return true;
}

// runner(x, M, bias): the plan's last item.
PyObject* run(PyObject* plan, PyObject* x, PyObject* bias) {
  PyObject* m = PyLong_FromLongLong(THPVariable_Unpack(x).size(0));
  if (m == nullptr) {
    return nullptr;
  }
  PyObject* call_args[3] = {x, m, bias};
  PyObject* out = PyObject_Vectorcall(PyTuple_GET_ITEM(plan, 6), call_args, 3, nullptr);
  Py_DECREF(m);
  return out;
}

PyObject* eager_call(PyObject*, PyObject* const* args, Py_ssize_t nargs) {
  if (nargs != 4) {
    PyErr_Format(PyExc_TypeError,
                 "eager_call(layer, x, bias, plan_attribute): expected 4 arguments, found %zd",
                 nargs);
    return nullptr;
  }
  PyObject *dict, *plan, *params;
  if (!layer_entries(args[0], args[3], &dict, &plan, &params)) {
    Py_XDECREF(dict);
    Py_RETURN_NONE;
  }
  Py_INCREF(plan);  // the runner call below may run Python that edits the layer's dict
  Py_INCREF(params);
  Py_DECREF(dict);
  PyObject* out = nullptr;  // NULL with the error set: a malformed plan or the runner's error
  PlanFields fields{};
  if (!PyTuple_CheckExact(plan) || PyTuple_GET_SIZE(plan) != kPlanSize) {
    PyErr_Format(PyExc_TypeError,
                 "eager_call: expected the plan (k, act_dtype, n, weight_ptr, weight_scale_ptr, "
                 "input_scale_ptr, runner), found %s", Py_TYPE(plan)->tp_name);
  } else if (read_fields(plan, &fields)) {
    bool serving = false;
    try {
      serving = is_serving_call(plan, fields, args[1], args[2], params);
    } catch (...) {  // a tensor whose metadata cannot be read here: the Python path decides
      serving = false;
    }
    out = serving ? run(plan, args[1], args[2]) : Py_NewRef(Py_None);
  }
  Py_DECREF(params);
  Py_DECREF(plan);
  return out;
}

PyMethodDef methods[] = {
    {"eager_call", reinterpret_cast<PyCFunction>(reinterpret_cast<void (*)()>(eager_call)),
     METH_FASTCALL,
     "eager_call(layer, x, bias, plan_attribute): the layer's plan's runner(x, M, bias) for the "
     "serving case, else None"},
    {nullptr, nullptr, 0, nullptr}};

PyModuleDef module_def = {PyModuleDef_HEAD_INIT, "eager_call", nullptr, -1, methods};

}  // namespace

#define KC_CONCAT_(a, b) a##b
#define KC_CONCAT(a, b) KC_CONCAT_(a, b)

// The module's name is the build's (kernel_core.jit passes it as TORCH_EXTENSION_NAME).
PyMODINIT_FUNC KC_CONCAT(PyInit_, TORCH_EXTENSION_NAME)() {
  g_weight = PyUnicode_InternFromString("weight");
  g_weight_scale = PyUnicode_InternFromString("weight_scale");
  g_input_scale = PyUnicode_InternFromString("input_scale");
  g_parameters = PyUnicode_InternFromString("_parameters");
  if (g_weight == nullptr || g_weight_scale == nullptr || g_input_scale == nullptr ||
      g_parameters == nullptr) {
    return nullptr;
  }
  return PyModule_Create(&module_def);
}
