#include "simd.h"

#include <atomic>

namespace tensora {

namespace {

Simd detect() {
#if TENSORA_HAVE_AVX2_VARIANT
    __builtin_cpu_init();
    if (__builtin_cpu_supports("avx2"))
        return Simd::avx2;
#endif
    return Simd::baseline;
}

std::atomic<int> &active() {
    static std::atomic<int> level{static_cast<int>(best_simd())};
    return level;
}

bool cpu_vnni() {
#if TENSORA_HAVE_AVX2_VARIANT
    static const bool ok = [] {
        __builtin_cpu_init();
        return __builtin_cpu_supports("avx512vl") && __builtin_cpu_supports("avx512vnni");
    }();
    return best_simd() == Simd::avx2 && ok;
#else
    return false;
#endif
}

std::atomic<bool> &vnni_on() {
    static std::atomic<bool> on{cpu_vnni()};
    return on;
}

}  // namespace

bool cpu_avx2_fma() {
#if TENSORA_HAVE_AVX2_VARIANT
    static const bool ok = [] {
        __builtin_cpu_init();
        return __builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma") && __builtin_cpu_supports("f16c");
    }();
    return ok;
#else
    return false;
#endif
}

Simd best_simd() {
    static const Simd best = detect();
    return best;
}

Simd active_simd() { return static_cast<Simd>(active().load(std::memory_order_relaxed)); }

bool set_simd(const std::string &name) {
    Simd want;
    if (name == "auto")
        want = best_simd();
    else if (name == "baseline")
        want = Simd::baseline;
    else if (name == "avx2" || name == "vnni")
        want = Simd::avx2;
    else
        return false;
    if (static_cast<int>(want) > static_cast<int>(best_simd()) || (name == "vnni" && !cpu_vnni()))
        return false;
    active().store(static_cast<int>(want), std::memory_order_relaxed);
    vnni_on().store((name == "auto" || name == "vnni") && cpu_vnni(), std::memory_order_relaxed);
    return true;
}

bool vnni_active() { return vnni_on().load(std::memory_order_relaxed); }

const char *simd_name(Simd s) { return s == Simd::avx2 ? "avx2" : "baseline"; }

}  // namespace tensora
