// Splitting an elementwise loop across std::threads.
//
// The callers are memory-bound streaming loops, so threads only pay once each chunk
// is far larger than the cost of starting a thread (~10-30 us); below `grain`
// elements per thread the loop runs on the calling thread. Callers release the GIL
// first: the body must not touch Python objects.
#pragma once

#include <algorithm>
#include <cstddef>
#include <cstdint>
#include <system_error>
#include <thread>
#include <vector>

namespace tensora {

// Threads used when the caller asks for "auto" (0): the hardware count, capped,
// because streaming conversions saturate memory bandwidth after a few cores.
// Cached: glibc's hardware_concurrency() reads /sys on every call (~7 us).
inline std::size_t auto_threads() {
    static const std::size_t n = [] {
        unsigned hw = std::thread::hardware_concurrency();
        return std::clamp<std::size_t>(hw == 0 ? 1 : hw, 1, 8);
    }();
    return n;
}

// Runs body(begin, end) over [0, n) in at most `threads` contiguous chunks
// (0 = auto, and then at least `grain` elements per chunk). Chunk starts are
// multiples of `align` elements so threads never share an output cache line.
// If a thread cannot be started, its chunk runs on the calling thread instead.
template <typename Body>
void parallel_for(std::size_t n, std::size_t threads, std::size_t grain,
                  std::size_t align, const Body &body) {
    if (n == 0)
        return;
    if (threads == 0)
        threads = std::min(auto_threads(), std::max<std::size_t>(n / grain, 1));
    std::size_t blocks = (n + align - 1) / align;
    threads = std::clamp<std::size_t>(threads, 1, blocks);
    if (threads == 1) {
        body(std::size_t(0), n);
        return;
    }

    std::size_t per = (blocks + threads - 1) / threads * align;  // elements per chunk
    std::vector<std::thread> workers;
    workers.reserve(threads - 1);
    // Chunks 1..threads-1 go to workers; chunk 0 runs here while they work.
    for (std::size_t t = 1; t < threads; ++t) {
        std::size_t lo = std::min(n, t * per), hi = std::min(n, lo + per);
        if (lo >= hi)
            break;
        try {
            workers.emplace_back([&body, lo, hi] { body(lo, hi); });
        } catch (const std::system_error &) {
            body(lo, hi);
        }
    }
    body(std::size_t(0), std::min(n, per));
    for (auto &w : workers)
        w.join();
}

}  // namespace tensora
