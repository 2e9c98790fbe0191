#include "core/thread_pool.h"

namespace qatml {

ThreadPool::ThreadPool(int threads) {
    for (int i = 1; i < threads; ++i) {
        try {
            workers_.emplace_back([this] { work(); });
        } catch (...) {
            break;  // fewer workers: the caller and the rest share the jobs
        }
    }
}

ThreadPool::~ThreadPool() {
    {
        std::lock_guard<std::mutex> lock(mutex_);
        stop_ = true;
    }
    wake_.notify_all();
    for (std::thread& t : workers_) t.join();
}

void ThreadPool::run(int64_t tasks, const std::function<void(int64_t)>& job) {
    std::unique_lock<std::mutex> exclusive(run_mutex_, std::try_to_lock);
    if (workers_.empty() || tasks <= 1 || !exclusive.owns_lock()) {
        for (int64_t i = 0; i < tasks; ++i) job(i);
        return;
    }
    {
        std::lock_guard<std::mutex> lock(mutex_);
        job_ = &job;
        tasks_ = tasks;
        next_ = 0;
        finished_ = 0;
        ++generation_;
    }
    wake_.notify_all();
    for (;;) {  // the caller takes jobs too
        int64_t i;
        {
            std::lock_guard<std::mutex> lock(mutex_);
            if (next_ >= tasks_) break;
            i = next_++;
        }
        job(i);
        std::lock_guard<std::mutex> lock(mutex_);
        ++finished_;
    }
    std::unique_lock<std::mutex> lock(mutex_);
    done_.wait(lock, [this] { return finished_ == tasks_; });
    job_ = nullptr;
}

void ThreadPool::work() {
    uint64_t seen = 0;
    std::unique_lock<std::mutex> lock(mutex_);
    for (;;) {
        wake_.wait(lock, [&] { return stop_ || (generation_ != seen && job_ != nullptr && next_ < tasks_); });
        if (stop_) return;
        seen = generation_;
        while (job_ != nullptr && next_ < tasks_) {
            const int64_t i = next_++;
            const std::function<void(int64_t)>* job = job_;
            lock.unlock();
            (*job)(i);
            lock.lock();
            if (++finished_ == tasks_) done_.notify_all();
        }
    }
}

}  // namespace qatml
