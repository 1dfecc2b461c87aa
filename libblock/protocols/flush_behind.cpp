// Flush-behind (see flush_behind.h).
#include "flush_behind.h"

#include <cerrno>
#include <utility>

namespace blk {

FlushBehind::FlushBehind(uint64_t every, std::function<int()> flush)
    : every_(every ? every : 1), flush_(std::move(flush)) {}

FlushBehind::~FlushBehind() { stop(); }

void FlushBehind::stop() {
    {
        std::lock_guard lock(mu_);
        if (!thread_.joinable()) return;
        stop_ = true;
    }
    cv_.notify_one();
    thread_.join();
    std::lock_guard lock(mu_);
    thread_ = std::thread();
    stop_ = false;
    pending_ = false;
}

void FlushBehind::wrote(uint64_t bytes) {
    if (written_.fetch_add(bytes, std::memory_order_relaxed) + bytes < every_) return;
    written_.store(0, std::memory_order_relaxed);
    {
        std::lock_guard lock(mu_);
        pending_ = true;
        if (!thread_.joinable()) thread_ = std::thread([this] { run(); });
    }
    cv_.notify_one();
}

int FlushBehind::take_error() {
    std::unique_lock lock(mu_);
    idle_cv_.wait(lock, [&] { return !running_; });
    return std::exchange(error_, 0);
}

void FlushBehind::run() {
    std::unique_lock lock(mu_);
    for (;;) {
        cv_.wait(lock, [&] { return pending_ || stop_; });
        if (stop_) return;
        pending_ = false;
        running_ = true;
        lock.unlock();
        const int e = flush_();
        lock.lock();
        running_ = false;
        if (e != 0 && e != EINVAL && error_ == 0) error_ = e;
        idle_cv_.notify_all();
    }
}

}  // namespace blk
