// Thread-local last-error message: every failing ABI call stores its message here.
#include "internal.h"

#include <cstdio>

namespace {
thread_local std::string t_last_error;
}

namespace qatml {

qatml_status fail(qatml_status status, const char* format, ...) {
    char buffer[1024];
    va_list args;
    va_start(args, format);
    std::vsnprintf(buffer, sizeof buffer, format, args);
    va_end(args);
    try {
        t_last_error.assign(buffer);
    } catch (...) {
        // Out of memory while reporting: keep the previous message rather than throw across the ABI.
    }
    return status;
}

}  // namespace qatml

extern "C" {

QATML_API const char* qatml_last_error(void) { return t_last_error.c_str(); }

QATML_API void qatml_clear_error(void) { t_last_error.clear(); }

QATML_API int32_t qatml_abi_version(void) { return QATML_ABI_VERSION; }

QATML_API const char* qatml_version_string(void) { return QATML_VERSION_STRING; }

}  // extern "C"
