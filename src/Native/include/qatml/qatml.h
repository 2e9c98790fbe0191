/*
 * qatml.h - the C ABI of QatMl's native library (libqatml_native).
 *
 * Contracts that hold for every function declared here:
 * - ABI stability: QATML_ABI_VERSION increases on every incompatible change. Managed code checks
 *   qatml_abi_version() once at load and refuses a mismatching library.
 * - Errors: every fallible function returns qatml_status. On anything but QATML_OK the calling
 *   thread's last-error message is set (qatml_last_error). No C++ exception ever crosses this ABI.
 * - Thread safety: all functions may be called from any thread. A handle may be used from several
 *   threads at once unless its functions say otherwise; destroying a handle while another thread
 *   uses it is the caller's bug (it is detected when possible, never relied upon).
 * - Ownership: the caller allocates every input and output buffer. Handles are allocated by the
 *   library (qatml_*_create) and released by the caller with the matching qatml_*_destroy.
 *   Strings returned as const char* belong to the library: static, or valid until the next call on
 *   the same thread, as each function says.
 * - Handles are validated against a registry of live handles, so a stale, foreign or NULL handle
 *   yields QATML_INVALID_HANDLE instead of a crash.
 * - Devices: functions that allocate or run work take a qatml_device. The CPU is always present;
 *   CUDA devices exist only in builds with QATML_CUDA and on hosts with a GPU.
 */
#ifndef QATML_QATML_H
#define QATML_QATML_H

#include <stddef.h>
#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

#if defined(_WIN32)
#  define QATML_API __declspec(dllexport)
#else
#  define QATML_API __attribute__((visibility("default")))
#endif

/* Incremented on every incompatible change of this header. */
#define QATML_ABI_VERSION 3

/* ---- status codes ---------------------------------------------------------------------------- */
typedef enum qatml_status {
    QATML_OK = 0,
    QATML_INVALID_ARGUMENT = 1,   /* NULL pointer, size out of range, overflow, bad enum value */
    QATML_INVALID_HANDLE = 2,     /* handle NULL, destroyed, or of another kind */
    QATML_OUT_OF_MEMORY = 3,
    QATML_UNSUPPORTED = 4,        /* valid request this build or CPU cannot serve */
    QATML_DEVICE_UNAVAILABLE = 5, /* the requested device does not exist here */
    QATML_INTERNAL = 6            /* a bug: please report the message */
} qatml_status;

/* ---- version and errors ---------------------------------------------------------------------- */

/* ABI version this library was built with (QATML_ABI_VERSION). */
QATML_API int32_t qatml_abi_version(void);

/* Library version as "major.minor.patch"; static storage. */
QATML_API const char* qatml_version_string(void);

/* Message of the last failing call on this thread ("" if none). Valid until the next qatml call on
 * the same thread. */
QATML_API const char* qatml_last_error(void);

/* Clears this thread's last-error message. */
QATML_API void qatml_clear_error(void);

/* ---- CPU capabilities and kernel dispatch ---------------------------------------------------- */

/* Kernel paths, numbered from the least to the most capable. They are not a total order of CPUs:
 * Zen 4, Ice Lake and Cascade Lake have AVX-512 VNNI but no AVX-VNNI, Alder Lake the reverse. Each
 * path executes a set of CPU features (qatml_isa_required_features) and runs only on a CPU that has
 * all of them; dispatch picks from the CPU's feature set, never by comparing paths to the CPU. */
typedef enum qatml_isa {
    QATML_ISA_SCALAR = 0,      /* portable C++, the reference every fast path is tested against */
    QATML_ISA_AVX2 = 1,        /* AVX2 + FMA: vpmaddubsw/vpmaddwd */
    QATML_ISA_AVX_VNNI = 2,    /* AVX2 + FMA + AVX-VNNI (VEX): vpdpbusd on ymm */
    QATML_ISA_AVX512_VNNI = 3  /* AVX2 + FMA + AVX-512 F/BW/VL + AVX512_VNNI: vpdpbusd on zmm */
} qatml_isa;

/* CPU feature bits reported by qatml_cpu_features. */
#define QATML_CPU_AVX2        (1u << 0)
#define QATML_CPU_FMA         (1u << 1)
#define QATML_CPU_AVX512F     (1u << 2)
#define QATML_CPU_AVX512BW    (1u << 3)
#define QATML_CPU_AVX512VL    (1u << 4)
#define QATML_CPU_AVX512_VNNI (1u << 5)
#define QATML_CPU_AVX_VNNI    (1u << 6)
#define QATML_CPU_AVX512_BF16 (1u << 7)

/* Feature bits of this CPU that the OS also enabled (XCR0 checked), less those a test's feature mask
 * removes (qatml_cpu_set_feature_mask). The CPU is read once per process. */
QATML_API qatml_status qatml_cpu_features(uint32_t* out_features);

/* The features path `isa` executes (QATML_CPU_* bits): the path runs only where qatml_cpu_features
 * has all of them. 0 for the scalar path. */
QATML_API qatml_status qatml_isa_required_features(int32_t isa, uint32_t* out_features);

/* The best path this CPU supports, ignoring any cap. */
QATML_API qatml_status qatml_cpu_detected_isa(int32_t* out_isa);

/* The path the kernels dispatch to now: the best path the CPU supports at or below the cap, if any
 * (scalar at worst). The cap is, in order: the value set by qatml_cpu_set_max_isa, else the
 * environment variable QATML_MAX_ISA (scalar | avx2 | avx_vnni | avx512_vnni, read on each call).
 * A cap never selects a path the CPU lacks: avx_vnni on a Zen 4 gives avx2, avx512_vnni on an Alder
 * Lake gives avx_vnni. An unknown value in QATML_MAX_ISA is an error (QATML_INVALID_ARGUMENT naming
 * the value). */
QATML_API qatml_status qatml_cpu_active_isa(int32_t* out_isa);

/* Process-wide cap on the path; -1 removes it (the environment variable applies again).
 * Thread-safe. Kernels read the cap when weights are packed (GEMM, convolution: the path is chosen
 * then and kept) and once per call for the elementwise and pooling kernels, never inside loops. */
QATML_API qatml_status qatml_cpu_set_max_isa(int32_t isa);

/* FOR TESTS ONLY: emulate a CPU with fewer features. Every query and every dispatch decision sees
 * qatml_cpu_features() = CPU features & mask & QATML_CPU_FEATURE_MASK, so a Zen 5 or Sapphire
 * Rapids machine can run the paths a Zen 4 / Cascade Lake (mask ~QATML_CPU_AVX_VNNI) or an
 * AVX2-only machine (QATML_CPU_AVX2 | QATML_CPU_FMA) would. 0xFFFFFFFF removes this mask. The
 * environment variable QATML_CPU_FEATURE_MASK (read once, at the first query) holds the bits kept
 * ("0x3") or "~" and the bits removed ("~0x40"); a malformed value makes every query and kernel
 * fail with QATML_INVALID_ARGUMENT naming it. Weights packed before a mask change keep their path;
 * running them on a path the mask removed is QATML_UNSUPPORTED. Thread-safe. */
QATML_API qatml_status qatml_cpu_set_feature_mask(uint32_t mask);

/* The feature mask in effect: QATML_CPU_FEATURE_MASK & the value of qatml_cpu_set_feature_mask. */
QATML_API qatml_status qatml_cpu_get_feature_mask(uint32_t* out_mask);

/* Lower-case name of a path ("scalar", "avx2", "avx_vnni", "avx512_vnni"); NULL if unknown. */
QATML_API const char* qatml_isa_name(int32_t isa);

/* ---- devices and contexts -------------------------------------------------------------------- */

typedef enum qatml_device_kind {
    QATML_DEVICE_CPU = 0,
    QATML_DEVICE_CUDA = 1
} qatml_device_kind;

typedef struct qatml_device {
    int32_t kind;  /* qatml_device_kind */
    int32_t index; /* 0 for the CPU; the CUDA ordinal otherwise */
} qatml_device;

/* 1 if this build contains the CUDA kernels, else 0. */
QATML_API int32_t qatml_cuda_compiled(void);

/* Number of CUDA devices visible (0 in CPU-only builds or without a GPU). */
QATML_API qatml_status qatml_cuda_device_count(int32_t* out_count);

/* A context binds work to a device and a thread count. Opaque; created and destroyed by the
 * library. Thread-safe for concurrent use; not for concurrent destroy. */
typedef struct qatml_context qatml_context;

/* num_threads: 0 = library default (1 today). Fails with QATML_DEVICE_UNAVAILABLE for a device
 * that does not exist here. */
QATML_API qatml_status qatml_context_create(const qatml_device* device, int32_t num_threads,
                                            qatml_context** out_context);

/* Releases a context. NULL is accepted (no-op, QATML_OK); a stale handle is QATML_INVALID_HANDLE. */
QATML_API qatml_status qatml_context_destroy(qatml_context* context);

QATML_API qatml_status qatml_context_get_device(const qatml_context* context, qatml_device* out_device);
QATML_API qatml_status qatml_context_get_num_threads(const qatml_context* context, int32_t* out_threads);

#ifdef __cplusplus
} /* extern "C" */
#endif

#include "qatml_kernels.h"
#include "qatml_engine.h"

#endif /* QATML_QATML_H */
