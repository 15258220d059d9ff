// KC_CHECK(condition, message parts...): TORCH_CHECK for plugin extensions, with the message built
// without iostreams.
//
// Why: torch.utils.cpp_extension builds with $CXX, and a toolchain that links libstdc++ statically
// into the extension (the GPU machine's /opt/gcc/bin/g++ does: the .so has no libstdc++.so entry)
// gives the extension its own, never initialised locale. TORCH_CHECK formats its message through
// an ostringstream there, and the first integer inserted segfaults the process instead of raising
// (strings insert without the locale, so they worked). Numbers here go through std::to_string,
// so a refused input is a Python exception naming what was found, whatever the toolchain.
// kernel_core.jit.load_extension puts this folder on every extension's include path.
#pragma once

#include <c10/core/ScalarType.h>
#include <c10/util/ArrayRef.h>
#include <c10/util/Exception.h>

#include <cstdint>
#include <string>
#include <type_traits>

namespace kernel_core {

inline std::string to_text(const char* text) { return text; }
inline std::string to_text(const std::string& text) { return text; }
inline std::string to_text(c10::ScalarType type) { return c10::toString(type); }
inline std::string to_text(c10::IntArrayRef sizes) {
  std::string out = "[";
  for (size_t i = 0; i < sizes.size(); ++i) out += (i ? ", " : "") + std::to_string(sizes[i]);
  return out + "]";
}
template <typename T, typename = std::enable_if_t<std::is_arithmetic_v<T>>>
std::string to_text(T value) {
  return std::to_string(value);
}

template <typename... Parts>
std::string message(const Parts&... parts) {
  std::string out;
  ((out += to_text(parts)), ...);
  return out;
}

}  // namespace kernel_core

#define KC_CHECK(condition, ...) TORCH_CHECK((condition), ::kernel_core::message(__VA_ARGS__))
