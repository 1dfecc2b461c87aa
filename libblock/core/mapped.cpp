// Read-only file mappings with a SIGBUS guard (see blk/mapped.h).
//
// A page of a shared file mapping that lies past the file's end, or whose read failed,
// raises SIGBUS when touched. The handler looks the address up in a table of the live
// mappings; for one of ours it puts an anonymous zero page in place of the lost page,
// marks the mapping lost and returns, so the access is retried and reads zeroes. Any
// other SIGBUS goes to the handler that was there before (a sanitizer's), or gets the
// default action. The table is process-wide because a signal handler can reach nothing
// else; it is lock-free, as a handler needs.
#include "blk/mapped.h"

#include <signal.h>
#include <sys/mman.h>
#include <unistd.h>

#include <atomic>
#include <mutex>
#include <utility>

namespace blk {

namespace {

struct Guard {
    std::atomic<bool> used{false};
    std::atomic<uintptr_t> lo{0};
    std::atomic<uintptr_t> hi{0};  // [lo, hi): the mapping; empty while being set up or torn down
    std::atomic<bool> lost{false};
};

Guard g_guards[kMaxLiveMappings];
struct sigaction g_previous;
uintptr_t g_page = 4096;
std::once_flag g_installed;

void on_sigbus(int sig, siginfo_t* info, void* ctx) {
    const auto addr = reinterpret_cast<uintptr_t>(info->si_addr);
    for (Guard& g : g_guards) {
        if (addr < g.lo.load(std::memory_order_acquire) || addr >= g.hi.load(std::memory_order_acquire)) continue;
        void* page = reinterpret_cast<void*>(addr & ~(g_page - 1));
        if (::mmap(page, g_page, PROT_READ, MAP_PRIVATE | MAP_ANONYMOUS | MAP_FIXED, -1, 0) != MAP_FAILED) {
            g.lost.store(true, std::memory_order_release);
            return;
        }
        break;
    }
    if (g_previous.sa_flags & SA_SIGINFO) {
        if (g_previous.sa_sigaction) return g_previous.sa_sigaction(sig, info, ctx);
    } else if (g_previous.sa_handler != SIG_DFL && g_previous.sa_handler != SIG_IGN) {
        return g_previous.sa_handler(sig);
    }
    // Returning re-runs the faulting access, which now gets the default action.
    ::signal(SIGBUS, SIG_DFL);
}

void install() {
    g_page = static_cast<uintptr_t>(::sysconf(_SC_PAGESIZE));
    struct sigaction sa {};
    sa.sa_sigaction = on_sigbus;
    sa.sa_flags = SA_SIGINFO;
    sigemptyset(&sa.sa_mask);
    ::sigaction(SIGBUS, &sa, &g_previous);
}

int claim_guard() {
    for (int i = 0; i < kMaxLiveMappings; ++i) {
        bool expected = false;
        if (g_guards[i].used.compare_exchange_strong(expected, true, std::memory_order_acq_rel)) {
            g_guards[i].lost.store(false, std::memory_order_relaxed);
            return i;
        }
    }
    return -1;
}

}  // namespace

Result<MappedBytes> MappedBytes::map(int fd, uint64_t off, uint64_t len) {
    MappedBytes m;
    if (len == 0) return m;
    std::call_once(g_installed, install);
    const uint64_t start = off - off % g_page;
    const uint64_t span = off - start + len;
    if (span < len || span > SIZE_MAX) return make_error(EOVERFLOW, "mapping too large");
    const int slot = claim_guard();
    if (slot < 0) return make_error(EBUSY, "too many live mappings");
    void* p = ::mmap(nullptr, static_cast<size_t>(span), PROT_READ, MAP_SHARED, fd, static_cast<off_t>(start));
    if (p == MAP_FAILED) {
        const int err = errno;
        g_guards[slot].used.store(false, std::memory_order_release);
        return errno_error(err, "mmap at byte " + std::to_string(off));
    }
    m.base_ = p;
    m.map_len_ = static_cast<size_t>(span);
    m.data_ = static_cast<const std::byte*>(p) + (off - start);
    m.len_ = static_cast<size_t>(len);
    m.slot_ = slot;
    Guard& g = g_guards[slot];
    g.lo.store(reinterpret_cast<uintptr_t>(p), std::memory_order_release);
    g.hi.store(reinterpret_cast<uintptr_t>(p) + span, std::memory_order_release);
    return m;
}

MappedBytes::MappedBytes(MappedBytes&& o) noexcept
    : base_(std::exchange(o.base_, nullptr)),
      map_len_(std::exchange(o.map_len_, 0)),
      data_(std::exchange(o.data_, nullptr)),
      len_(std::exchange(o.len_, 0)),
      slot_(std::exchange(o.slot_, -1)) {}

MappedBytes& MappedBytes::operator=(MappedBytes&& o) noexcept {
    if (this != &o) {
        reset();
        base_ = std::exchange(o.base_, nullptr);
        map_len_ = std::exchange(o.map_len_, 0);
        data_ = std::exchange(o.data_, nullptr);
        len_ = std::exchange(o.len_, 0);
        slot_ = std::exchange(o.slot_, -1);
    }
    return *this;
}

bool MappedBytes::intact() const {
    return slot_ < 0 || !g_guards[slot_].lost.load(std::memory_order_acquire);
}

void MappedBytes::reset() {
    if (slot_ >= 0) {
        Guard& g = g_guards[slot_];
        // Out of the table first: once unmapped, the addresses may belong to someone else.
        g.hi.store(0, std::memory_order_release);
        g.lo.store(0, std::memory_order_release);
        ::munmap(base_, map_len_);
        g.used.store(false, std::memory_order_release);
    }
    base_ = nullptr;
    map_len_ = 0;
    data_ = nullptr;
    len_ = 0;
    slot_ = -1;
}

}  // namespace blk
