// Splitting a loop across threads of one persistent pool.
//
// Decode-time GEMVs of a small model are tens of microseconds each, about what starting
// and joining a std::thread costs, so the workers are started once and wait for work
// (a short spin, then a condition variable). The caller, done with its own share, also
// spins on an atomic count before it sleeps: a thread that sleeps between two GEMVs
// takes a futex wake-up, and on a virtual machine an idle vCPU's wake-up costs 10-20 us,
// as much as the 2-thread split of a 768x768 product saves (a q4_0 768x768 GEMV on 2
// threads took 29-31 us with a blocking wait, 12-21 us spinning, 20-26 us on one thread).
// One loop uses the pool at a time; a second
// caller arriving meanwhile (another Python thread, the GIL released) runs its loop on
// its own thread. A forked child (DataLoader workers) gets a fresh pool: the parent's
// threads do not exist there. Callers release the GIL first: bodies must not touch
// Python objects.
#pragma once

#include <algorithm>
#include <atomic>
#include <condition_variable>
#include <cstddef>
#include <cstdint>
#include <exception>
#include <functional>
#include <mutex>
#include <system_error>
#include <thread>
#include <vector>

#include <unistd.h>

#if defined(__linux__)
#include <sched.h>
#endif

namespace tensora {

// The CPUs this process may run on (its affinity mask on Linux, as taskset or a
// container sets it, else the hardware count), capped, because streaming loops saturate
// memory bandwidth after a few cores. The pool is sized for this many threads.
// Cached: glibc's hardware_concurrency() reads /sys on every call (~7 us).
inline std::size_t max_threads() {
    static const std::size_t n = [] {
        unsigned hw = std::thread::hardware_concurrency();
#if defined(__linux__)
        cpu_set_t allowed;
        if (sched_getaffinity(0, sizeof allowed, &allowed) == 0 && CPU_COUNT(&allowed) > 0)
            hw = std::min<unsigned>(hw == 0 ? 1024 : hw, unsigned(CPU_COUNT(&allowed)));
#endif
        return std::clamp<std::size_t>(hw == 0 ? 1 : hw, 1, 8);
    }();
    return n;
}

// The user's cap (tensora.set_num_threads), 0 = none. Like torch.set_num_threads it
// bounds every loop, explicit thread counts included, so that a process sharing the
// machine (or a benchmark's one-thread column) really runs on that many cores.
inline std::atomic<std::size_t> &thread_limit() {
    static std::atomic<std::size_t> limit{0};
    return limit;
}

// Threads used when the caller asks for "auto" (0), and the most any loop uses.
inline std::size_t auto_threads() {
    const std::size_t limit = thread_limit().load(std::memory_order_relaxed);
    return limit == 0 ? max_threads() : std::min(limit, max_threads());
}

class ThreadPool {
  public:
    using Task = std::function<void(std::size_t)>;

    // The pool of this process (created on first use, and again in a forked child).
    static ThreadPool *get() {
        static std::mutex guard;
        static ThreadPool *pool = nullptr;  // leaked on purpose: no joins at interpreter exit
        std::lock_guard<std::mutex> lock(guard);
        if (pool == nullptr || pool->pid_ != getpid())
            pool = new ThreadPool(max_threads() - 1);  // a child's inherited pool has no threads
        return pool;
    }

    // Runs task(i) for every i in [0, count), spread over the workers and the caller;
    // false (nothing run) when another loop holds the pool.
    bool run(std::size_t count, const Task &task) {
        std::unique_lock<std::mutex> busy(busy_, std::try_to_lock);
        if (!busy.owns_lock() || workers_ == 0 || count >= (std::uint64_t(1) << 32))
            return false;
        Job job;
        {
            std::lock_guard<std::mutex> lock(mutex_);
            if (++generation_ == 0)  // 0 means "no loop yet" to a new worker
                ++generation_;
            job = Job{generation_, &task, count};
            job_ = job;
            pending_.store(count);
            error_ = nullptr;
            ticket_.store(std::uint64_t(job.generation) << 32);
        }
        wake_.notify_all();
        work(job);
        for (int spin = 0; spin < kSpins && pending_.load() != 0; ++spin)
            relax(spin);
        if (pending_.load() != 0) {
            std::unique_lock<std::mutex> lock(mutex_);
            done_.wait(lock, [this] { return pending_.load() == 0; });
        }
        if (error_)  // written before its task's decrement, which the load above saw
            std::rethrow_exception(error_);
        return true;
    }

  private:
    // One loop: its tasks are indices [0, count); ticket_ holds (generation << 32) | next index.
    struct Job {
        std::uint32_t generation = 0;
        const Task *task = nullptr;
        std::size_t count = 0;
    };

    explicit ThreadPool(std::size_t n) : pid_(getpid()) {
        for (std::size_t i = 0; i < n; ++i) {
            try {
                std::thread([this] { loop(); }).detach();
                ++workers_;
            } catch (const std::system_error &) {
                break;  // fewer workers; the caller still does its share
            }
        }
    }

    void loop() {
        std::uint32_t seen = 0;
        for (;;) {
            for (int spin = 0; spin < kSpins && std::uint32_t(ticket_.load() >> 32) == seen; ++spin)
                relax(spin);
            Job job;
            {
                std::unique_lock<std::mutex> lock(mutex_);
                wake_.wait(lock, [&] { return job_.generation != seen; });
                job = job_;  // read whole under the lock: never half of one loop and half of the next
            }
            seen = job.generation;
            work(job);
        }
    }

    // Claims indices of `job` until none are left (or a newer loop replaced it).
    void work(const Job &job) {
        for (;;) {
            std::uint64_t t = ticket_.load();
            do {
                if (std::uint32_t(t >> 32) != job.generation || (t & 0xffffffffu) >= job.count)
                    return;
            } while (!ticket_.compare_exchange_weak(t, t + 1));
            try {
                (*job.task)(std::size_t(t & 0xffffffffu));
            } catch (...) {
                std::lock_guard<std::mutex> lock(mutex_);
                if (!error_)
                    error_ = std::current_exception();
            }
            if (pending_.fetch_sub(1) == 1) {
                std::lock_guard<std::mutex> lock(mutex_);  // a sleeping caller tests pending_ under it
                done_.notify_all();
            }
        }
    }

    // Spin-waits last a few hundred microseconds (the gap between two kernels of a decode
    // step is far less); the pause instruction spares the sibling hyperthread, and a yield
    // every 64 rounds lets other processes of a loaded machine run.
    static constexpr int kSpins = 20000;
    static void relax(int spin) {
        if (spin % 64 == 63)
            std::this_thread::yield();
        else
            pause();
    }

    static void pause() {
#if defined(__x86_64__) || defined(__i386__)
        __builtin_ia32_pause();
#elif defined(__aarch64__)
        asm volatile("yield");
#endif
    }

    const pid_t pid_;
    std::size_t workers_ = 0;
    std::mutex busy_, mutex_;
    std::condition_variable wake_, done_;
    std::atomic<std::uint64_t> ticket_{0};
    std::uint32_t generation_ = 0;
    Job job_;
    std::atomic<std::size_t> pending_{0};
    std::exception_ptr error_;
};

// Runs body(begin, end) over [0, n) in at most `threads` contiguous chunks
// (0 = auto, and then at least `grain` elements per chunk). Chunk starts are
// multiples of `align` elements so threads never share an output cache line.
template <typename Body>
void parallel_for(std::size_t n, std::size_t threads, std::size_t grain,
                  std::size_t align, const Body &body) {
    if (n == 0)
        return;
    if (threads == 0)
        threads = std::min(auto_threads(), std::max<std::size_t>(n / grain, 1));
    else
        threads = std::min(threads, auto_threads());
    std::size_t blocks = (n + align - 1) / align;
    threads = std::clamp<std::size_t>(threads, 1, blocks);
    std::size_t per = (blocks + threads - 1) / threads * align;  // elements per chunk
    std::size_t chunks = (n + per - 1) / per;
    if (chunks > 1) {
        std::function<void(std::size_t)> task = [&](std::size_t c) { body(c * per, std::min(n, c * per + per)); };
        if (ThreadPool::get()->run(chunks, task))
            return;
    }
    body(std::size_t(0), n);  // one chunk, or the pool is busy with another caller's loop
}

}  // namespace tensora
