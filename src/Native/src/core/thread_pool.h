// A persistent pool of worker threads owned by a CPU context: a run hands it `tasks` numbered jobs and
// takes part itself, so no thread is started per run.
#pragma once

#include <condition_variable>
#include <cstdint>
#include <functional>
#include <mutex>
#include <thread>
#include <vector>

namespace qatml {

class ThreadPool {
public:
    // `threads` counts the caller: threads - 1 workers are started (at most; fewer when the system refuses).
    explicit ThreadPool(int threads);
    ~ThreadPool();
    ThreadPool(const ThreadPool&) = delete;
    ThreadPool& operator=(const ThreadPool&) = delete;

    int threads() const { return static_cast<int>(workers_.size()) + 1; }

    // Runs job(0) .. job(tasks - 1), the calling thread included, and returns when all are done. Jobs must not
    // throw. A pool serves one run at a time: a run that finds it busy runs its jobs on the calling thread.
    void run(int64_t tasks, const std::function<void(int64_t)>& job);

private:
    void work();

    std::vector<std::thread> workers_;
    std::mutex run_mutex_;  // one run at a time
    std::mutex mutex_;
    std::condition_variable wake_, done_;
    const std::function<void(int64_t)>* job_ = nullptr;
    int64_t tasks_ = 0, next_ = 0, finished_ = 0;
    uint64_t generation_ = 0;
    bool stop_ = false;
};

}  // namespace qatml
