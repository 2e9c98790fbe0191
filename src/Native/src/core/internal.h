// Internal helpers shared by every ABI entry: error reporting, exception fencing, handle registry.
#pragma once

#include "qatml/qatml.h"

#include <cstdarg>
#include <new>
#include <string>

namespace qatml {

// Sets the calling thread's last-error message and returns `status` (printf-style message).
qatml_status fail(qatml_status status, const char* format, ...) __attribute__((format(printf, 2, 3)));

// Runs `body` (returning qatml_status) with every C++ exception turned into a status, so none ever
// crosses the C ABI. Clears the thread's error first so a success leaves no stale message.
template <typename Body>
qatml_status guarded(const char* function, Body&& body) noexcept {
    try {
        return body();
    } catch (const std::bad_alloc&) {
        return fail(QATML_OUT_OF_MEMORY, "%s: out of memory", function);
    } catch (const std::exception& e) {
        return fail(QATML_INTERNAL, "%s: internal error: %s", function, e.what());
    } catch (...) {
        return fail(QATML_INTERNAL, "%s: internal error (unknown exception)", function);
    }
}

// Kinds of opaque handle. Each handle object starts with its kind so the registry can tell them apart.
enum class HandleKind : uint32_t { Context = 0x51430001u,
                                   PackedWeights = 0x51430002u,
                                   Engine = 0x51430003u };

// Registry of live handles: lets every entry reject NULL, destroyed and foreign pointers without
// dereferencing them. Registration costs a mutex and a hash insert; only create/destroy and
// validation touch it.
void register_handle(const void* handle, HandleKind kind);
bool unregister_handle(const void* handle, HandleKind kind);
bool is_live_handle(const void* handle, HandleKind kind);

// Validates a handle argument; on failure sets the error and returns false.
#define QATML_CHECK_HANDLE(ptr, kind, fn)                                              \
  do {                                                                                 \
    if ((ptr) == nullptr)                                                              \
      return ::qatml::fail(QATML_INVALID_HANDLE, "%s: handle '%s' is NULL", fn, #ptr); \
    if (!::qatml::is_live_handle((ptr), (kind)))                                       \
      return ::qatml::fail(QATML_INVALID_HANDLE,                                       \
                           "%s: handle '%s' (%p) is not a live handle of this kind "   \
                           "(destroyed, foreign or corrupted)",                        \
                           fn, #ptr, static_cast<const void*>(ptr));                   \
  } while (0)

#define QATML_CHECK_NOT_NULL(ptr, fn)                                                      \
  do {                                                                                     \
    if ((ptr) == nullptr)                                                                  \
      return ::qatml::fail(QATML_INVALID_ARGUMENT, "%s: argument '%s' is NULL", fn, #ptr); \
  } while (0)

// CUDA contexts (src/cuda/cuda_context.cpp; core/cuda_stub.cpp in CPU builds): each owns a stream, its device
// arenas and pinned host staging. Opened when a CUDA context is created, closed when it is destroyed.
struct CudaContextState;
qatml_status cuda_context_open(int32_t index, CudaContextState** out, const char* function);
void cuda_context_close(CudaContextState* state);
CudaContextState* context_cuda_state(const qatml_context* ctx);  // NULL for CPU contexts

// The persistent worker threads of a CPU context of more than one thread (thread_pool.h); NULL otherwise.
class ThreadPool;
ThreadPool* context_thread_pool(const qatml_context* ctx);

// CPU dispatch, also used by the kernels. Features are the CPU's (read once) less the test-only mask.
uint32_t cpu_features();
// Whether the CPU has every feature the code of a path executes (qatml_isa_required_features).
bool isa_supported(qatml_isa isa);
// The best path the CPU supports at or below `cap` (scalar at worst).
qatml_isa best_isa_at_most(qatml_isa cap);
qatml_isa detected_isa();
// The path kernels use now: the best supported one at or below the cap (qatml_cpu_set_max_isa, else
// QATML_MAX_ISA). Returns false and sets the error for a bad QATML_MAX_ISA or QATML_CPU_FEATURE_MASK.
bool active_isa(qatml_isa* out, const char* function);
// False and the error set when QATML_CPU_FEATURE_MASK holds no valid mask.
bool check_feature_mask(const char* function);
bool parse_isa_name(const char* name, qatml_isa* out);

}  // namespace qatml
