// The copy engine behind convert: worker threads, guest-order writes, bounded buffers.
//
// Workers take requests from the planner (copy_plan.h) under one short lock, each into a
// slot (a buffer and its list of target operations), read and prepare them in parallel
// (zero detection, compression), then write. In order, a finished slot is queued by its
// sequence number and whoever finds the next number ready takes the write token and
// writes every slot that is ready in order, while the other workers go on reading ahead
// into free slots: nobody waits for a write it does not do. Out of order, every worker
// writes its own slot. A slot is taken before a sequence number, so the oldest unwritten
// request always holds a slot and the queue cannot deadlock.
#include "blk/copy.h"

#include <sys/mman.h>
#include <unistd.h>

#include <algorithm>
#include <chrono>
#include <condition_variable>
#include <cstdlib>
#include <cstring>
#include <mutex>
#include <optional>
#include <thread>

#include "copy_plan.h"
#include "zero_scan.h"

namespace blk {

namespace {

using namespace copy_detail;
using Clock = std::chrono::steady_clock;

constexpr uint64_t kSector = 512;
// Buffers are aligned for O_DIRECT targets.
constexpr uint64_t kBufferAlign = 4096;
// Buffers of whole 2 MiB pages (the default request) are aligned to them and asked to be
// backed by transparent huge pages: the kernel's copies into and out of them (read(),
// write()) and the zero scan then miss the TLB far less. Measured on the 2-core VM of the
// README's benchmark (perf stat, 10 runs, 256 MiB image, warm page cache): qcow2 -> raw
// 142 ms CPU / 94 ms wall with 4 KiB pages, 72 ms / 59 ms with huge pages (qemu-img 169 /
// 136); raw -> qcow2 155 / 109 against 101 / 76. Peak RSS stays the same: every slot's
// buffer is filled whole anyway. Where THP is off, madvise fails and nothing changes.
constexpr uint64_t kHugePage = 2u << 20;
// A write_zeroes request covers at most this much, so cancel and progress stay responsive.
constexpr uint64_t kZeroRequestBytes = 1ull << 30;
// qemu's largest buffer (MAX_BUF_SECTORS): the largest request and cluster the engine takes.
constexpr uint64_t kMaxRequestBytes = 16u << 20;
constexpr uint64_t kMinRequestBytes = 4096;
// With -c, clusters are read and compressed in batches of at most this much.
constexpr uint64_t kCompressBatchBytes = 128u << 10;
// A rate-limited or cancelled worker sleeps at most this long between checks.
constexpr auto kSleepSlice = std::chrono::milliseconds(50);

std::string reason(int code) { return std::strerror(code); }

// qemu-img's text first (scripts match it), then the cause when the error says more than
// strerror does: which table or file failed is what the user needs to act on.
Error read_error(uint64_t off, const Error& cause) {
    std::string msg = "error while reading at byte " + std::to_string(off) + ": " + reason(cause.code);
    if (cause.message != reason(cause.code)) msg += " (" + cause.message + ")";
    return make_error(cause.code, std::move(msg));
}

Error write_error(uint64_t off, int code) {
    return make_error(code, "error while writing at byte " + std::to_string(off) + ": " + reason(code));
}

uint64_t pow2floor(uint64_t v) {
    uint64_t p = 1;
    while (p <= v / 2) p *= 2;
    return p;
}

struct FreeDeleter {
    void operator()(std::byte* p) const { std::free(p); }
};
using Buffer = std::unique_ptr<std::byte[], FreeDeleter>;

// One target operation a request turned into.
struct Op {
    enum class Kind : uint8_t { Write, Zero, Compressed } kind = Kind::Write;
    uint64_t off = 0;
    uint64_t len = 0;
    const std::byte* data = nullptr;         // Write
    const CompressedCluster* cc = nullptr;   // Compressed
};

// A request in flight: its buffer and what it will do to the target. Reused, so the
// steady state allocates nothing but what compress_cluster returns.
struct Slot {
    Buffer buf;
    Request req;
    uint64_t seq = 0;
    bool offload = false;  // copy_file_range at write time
    std::vector<Op> ops;
    std::vector<CompressedCluster> ccs;
    std::vector<Segment> segs;
    uint64_t data_bytes = 0;
    uint64_t zero_bytes = 0;
    uint64_t skip_bytes = 0;

    void reset() {
        offload = false;
        ops.clear();
        ccs.clear();
        data_bytes = zero_bytes = skip_bytes = 0;
    }
};

// -r: a byte budget that refills at `rate` bytes per second; a write waits for its share.
class RateLimiter {
public:
    explicit RateLimiter(uint64_t rate) : rate_(rate) {}

    // Sleeps until `bytes` may be written; false if `stop` said to give up meanwhile.
    template <class StopFn>
    bool acquire(uint64_t bytes, StopFn stop) {
        if (rate_ == 0 || bytes == 0) return true;
        Clock::time_point at;
        {
            std::lock_guard lk(mu_);
            Clock::time_point now = Clock::now();
            at = std::max(now, next_);
            auto cost = std::chrono::duration_cast<Clock::duration>(std::chrono::duration<double>(double(bytes) / double(rate_)));
            next_ = at + cost;
        }
        while (Clock::now() < at) {
            if (stop()) return false;
            std::this_thread::sleep_for(std::min<Clock::duration>(at - Clock::now(), kSleepSlice));
        }
        return !stop();
    }

private:
    uint64_t rate_;
    std::mutex mu_;
    Clock::time_point next_{};
};

class Engine {
public:
    explicit Engine(const CopyOptions& o) : o_(o), limiter_(o.rate_limit) {}

    Result<CopyStats> run();

private:
    Status setup();
    Result<uint64_t> count_progress_total();
    void worker();
    Slot* acquire_slot();
    void release_slot(Slot* s);
    void submit(Slot* s);
    Status prepare(Slot& s);
    Status prepare_read(Slot& s);
    Status prepare_compressed(Slot& s, std::span<const std::byte> data, bool zero_source);
    Status execute(Slot& s);
    Status execute_ops(Slot& s);
    Status offload(Slot& s);
    Status read_guest(uint64_t off, std::span<std::byte> buf);
    void salvage_read(const PlanSource& src, uint64_t soff, std::span<std::byte> buf);
    void add_zero(Slot& s, uint64_t off, uint64_t len);
    Result<const CompressedCluster*> zero_cluster(Slot& s, uint64_t len);
    void fail(Error e);
    bool stopped() const { return stop_.load(std::memory_order_acquire); }
    bool check_cancel();
    void report_progress(uint64_t bytes);
    void warn(const std::string& msg);

    const CopyOptions& o_;
    PlanConfig cfg_;
    std::optional<Planner> planner_;
    SparseRule rule_;
    uint64_t req_size_ = 0;
    unsigned nslots_ = 0;
    unsigned nthreads_ = 0;
    uint64_t cluster_ = 0;  // compression: the target's cluster size
    std::vector<int> src_fds_;  // -C: host fds of the sources, in source order
    int target_fd_ = -1;
    std::atomic<bool> offload_ok_{false};

    // Planning: the planner and the sequence numbers it hands out.
    std::mutex plan_mu_;
    uint64_t next_seq_ = 0;

    // Slots, the in-order queue and the write token.
    std::mutex seq_mu_;
    std::condition_variable slot_cv_;
    std::vector<Slot> slots_;
    std::vector<Slot*> free_;
    std::vector<Slot*> ring_;  // ready slots, at seq % nslots_
    uint64_t write_next_ = 0;
    bool writing_ = false;
    std::atomic<uint64_t> buffer_bytes_{0};

    std::atomic<bool> stop_{false};
    std::mutex err_mu_;
    std::optional<Error> err_;

    // The zero buffer for -S 0 and compressed zero clusters, shared by every worker.
    Buffer zeroes_;
    std::once_flag zero_cc_once_;
    Result<CompressedCluster> zero_cc_{CompressedCluster{}};

    std::atomic<uint64_t> data_bytes_{0}, zero_bytes_{0}, skip_bytes_{0}, offloaded_{0};

    std::mutex progress_mu_;
    uint64_t progress_done_ = 0;
    uint64_t progress_total_ = 0;
    std::mutex warn_mu_;
    RateLimiter limiter_;
    bool above_base_ = false;  // target_has_backing or an explicit base: copy only the layers above
};

Status Engine::setup() {
    if (!o_.target) return make_error(EINVAL, "copy: no target");
    if (o_.sources.empty()) return make_error(EINVAL, "copy: no source");
    if (o_.target->read_only()) return make_error(EACCES, "copy: the target is read-only");
    above_base_ = o_.target_has_backing || o_.base;
    if (o_.base) {
        if (o_.sources.size() != 1 || !o_.sources[0]) return make_error(EINVAL, "copy: a base needs exactly one source");
        Node* n = o_.sources[0];
        while (n && n != o_.base) n = backing_chain_next(n);
        if (!n || o_.sources[0] == o_.base) return make_error(EINVAL, "copy: the base is not below the source in its backing chain");
    }
    if (o_.target_is_zero && above_base_) {
        return make_error(EINVAL, "Cannot use --target-is-zero when the destination image has a backing file");
    }
    uint64_t total = 0;
    uint64_t max_transfer = o_.target->limits().max_transfer;
    for (Node* n : o_.sources) {
        if (!n) return make_error(EINVAL, "copy: a source is missing");
        if (n->size() > UINT64_MAX - total) return make_error(EFBIG, "copy: the sources are too large");
        if (n->size() > 0) {
            PlanSource ps;
            ps.node = n;
            ps.start = total;
            ps.size = n->size();
            ps.base = o_.base ? o_.base : o_.target_has_backing ? backing_chain_next(n) : nullptr;
            cfg_.sources.push_back(ps);
        }
        total += n->size();
        if (uint64_t mt = n->limits().max_transfer; mt && (!max_transfer || mt < max_transfer)) max_transfer = mt;
    }
    if (o_.target->size() < total) return make_error(EINVAL, "output file is smaller than input file");

    nslots_ = std::clamp(o_.requests, 1u, kCopyMaxRequests);
    nthreads_ = o_.threads ? o_.threads : std::max(std::thread::hardware_concurrency(), 1u);
    // Compression is CPU-bound: every worker gets a slot (smaller buffers keep the memory
    // bound). Otherwise a worker beyond the slots would have nothing to do.
    if (o_.compress) nslots_ = std::max(nslots_, std::min(nthreads_, kCopyMaxRequests));
    nthreads_ = std::min(nthreads_, nslots_);

    uint64_t rs = o_.request_size;
    if (rs < kMinRequestBytes || rs > kMaxRequestBytes) {
        return make_error(EINVAL, "copy: request size " + std::to_string(rs) + " is not within 4 KiB..16 MiB");
    }
    // With -c each slot also holds its compressed copies.
    const uint64_t per_slot = o_.compress ? 2 : 1;
    // Compression costs far more than a request's overhead: small batches keep the memory
    // (input and compressed copies) down without slowing anything.
    if (o_.compress) rs = std::min(rs, kCompressBatchBytes);
    if (rs * per_slot * nslots_ > kCopyMaxBufferBytes) rs = kCopyMaxBufferBytes / (per_slot * nslots_);
    if (max_transfer && rs > max_transfer) rs = max_transfer;
    rs = std::max<uint64_t>(rs / kSector * kSector, kSector);

    if (o_.compress) {
        if (!o_.target->caps().write_compressed) return make_error(ENOTSUP, "Compression not supported for this file format");
        auto cs = o_.target->cluster_size();
        if (!cs || *cs == 0 || *cs > kMaxRequestBytes) return make_error(EINVAL, "invalid cluster size");
        cluster_ = *cs;
        // Huge clusters: fewer slots rather than more memory (a slot holds one cluster and
        // its compressed copy at least).
        const uint64_t fit = std::max<uint64_t>(1, kCopyMaxBufferBytes / (per_slot * cluster_));
        if (nslots_ > fit) {
            nslots_ = static_cast<unsigned>(fit);
            nthreads_ = std::min(nthreads_, nslots_);
        }
        rs = std::max(cluster_, rs / cluster_ * cluster_);
    }
    req_size_ = rs;

    cfg_.total = total;
    cfg_.target_has_backing = above_base_;
    cfg_.target_backing_size = above_base_ ? o_.target_backing_size : UINT64_MAX;
    cfg_.target_is_zero = o_.target_is_zero;
    cfg_.zero_as_data = o_.min_sparse < kSector;
    cfg_.salvage = o_.salvage;
    cfg_.request_size = req_size_;
    cfg_.zero_request_size = cluster_ ? kZeroRequestBytes / cluster_ * cluster_ : kZeroRequestBytes;
    if (cfg_.zero_request_size == 0) cfg_.zero_request_size = cluster_;
    cfg_.cluster = cluster_;

    // Zero detection works on aligned cells no smaller than the target's own granularity.
    uint64_t g = kSector;
    if (!cfg_.zero_as_data) g = std::max(g, pow2floor(o_.min_sparse));
    g = std::max<uint64_t>(g, o_.target->limits().request_alignment);
    if (auto cs = o_.target->cluster_size(); cs && *cs <= req_size_) g = std::max(g, *cs);
    rule_.granule = std::min(g, req_size_);
    rule_.min_run = std::max<uint64_t>(o_.min_sparse / kSector * kSector, kSector);

    if (o_.copy_range && !o_.compress && !o_.salvage) {
        target_fd_ = o_.target->host_fd();
        bool ok = target_fd_ >= 0;
        for (const PlanSource& s : cfg_.sources) {
            int fd = s.node->host_fd();
            ok = ok && fd >= 0;
            src_fds_.push_back(fd);
        }
        offload_ok_ = ok;
    }

    slots_.resize(nslots_);
    for (Slot& s : slots_) free_.push_back(&s);
    ring_.assign(nslots_, nullptr);
    return {};
}

Result<uint64_t> Engine::count_progress_total() {
    PlanConfig quiet = cfg_;
    quiet.warn = nullptr;  // the real pass reports salvage warnings once
    Planner p(quiet);
    uint64_t sum = 0;
    for (;;) {
        BLK_TRY_ASSIGN(auto r, p.next());
        if (!r) break;
        if (r->action == Action::Read || r->action == Action::ZeroData) sum += r->len;
    }
    return sum;
}

void Engine::fail(Error e) {
    {
        std::lock_guard lk(err_mu_);
        if (!err_) err_ = std::move(e);
    }
    stop_.store(true, std::memory_order_release);
    std::lock_guard lk(seq_mu_);
    slot_cv_.notify_all();
}

bool Engine::check_cancel() {
    if (o_.cancel && o_.cancel->load(std::memory_order_relaxed)) {
        fail(make_error(ECANCELED, "interrupted"));
        return true;
    }
    return stopped();
}

void Engine::warn(const std::string& msg) {
    if (!o_.warn) return;
    std::lock_guard lk(warn_mu_);
    o_.warn(msg);
}

void Engine::report_progress(uint64_t bytes) {
    if (!o_.progress || bytes == 0) return;
    std::lock_guard lk(progress_mu_);
    progress_done_ = std::min(progress_done_ + bytes, progress_total_);
    o_.progress(progress_done_, progress_total_);
}

Slot* Engine::acquire_slot() {
    std::unique_lock lk(seq_mu_);
    slot_cv_.wait(lk, [&] { return !free_.empty() || stopped(); });
    if (stopped()) return nullptr;
    Slot* s = free_.back();
    free_.pop_back();
    return s;
}

void Engine::release_slot(Slot* s) {
    std::lock_guard lk(seq_mu_);
    free_.push_back(s);
    slot_cv_.notify_one();
}

Result<const CompressedCluster*> Engine::zero_cluster(Slot& s, uint64_t len) {
    std::span<const std::byte> z(zeroes_.get(), len);
    if (len == cluster_) {
        // Every full zero cluster compresses the same: do it once.
        std::call_once(zero_cc_once_, [&] { zero_cc_ = o_.target->compress_cluster(z); });
        if (!zero_cc_) return zero_cc_.error();
        return &*zero_cc_;
    }
    BLK_TRY_ASSIGN(CompressedCluster cc, o_.target->compress_cluster(z));
    s.ccs.push_back(std::move(cc));
    return &s.ccs.back();
}

void Engine::add_zero(Slot& s, uint64_t off, uint64_t len) {
    // Zeroes beyond the new backing file's end, or on a target known to be zero, need
    // nothing; elsewhere they are written as zeroes that may become holes.
    uint64_t cut = off + len;
    if (o_.target_is_zero) cut = off;
    else if (above_base_ && o_.target_backing_size < cut) cut = std::max(off, o_.target_backing_size);
    if (cut > off) {
        if (!s.ops.empty() && s.ops.back().kind == Op::Kind::Zero && s.ops.back().off + s.ops.back().len == off) {
            s.ops.back().len += cut - off;
        } else {
            s.ops.push_back(Op{Op::Kind::Zero, off, cut - off});
        }
        s.zero_bytes += cut - off;
    }
    s.skip_bytes += off + len - cut;
}

Status Engine::prepare_compressed(Slot& s, std::span<const std::byte> data, bool zero_source) {
    const Request& q = s.req;
    // Compressed copies point into s.ccs: reserve so that they do not move.
    s.ccs.reserve((q.len + cluster_ - 1) / cluster_ + 1);
    for (uint64_t off = q.off; off < q.off + q.len; off += cluster_) {
        const uint64_t len = std::min(cluster_, q.off + q.len - off);
        const CompressedCluster* cc = nullptr;
        if (zero_source) {
            BLK_TRY_ASSIGN(cc, zero_cluster(s, len));
        } else {
            auto c = data.subspan(off - q.off, len);
            if (!cfg_.zero_as_data && is_zero(c)) {
                add_zero(s, off, len);
                continue;
            }
            auto r = o_.target->compress_cluster(c);
            if (!r) return std::move(r).error();
            s.ccs.push_back(std::move(*r));
            cc = &s.ccs.back();
        }
        s.ops.push_back(Op{Op::Kind::Compressed, off, len, nullptr, cc});
        s.data_bytes += len;
    }
    return {};
}

// Reads into the slot's own buffer, reused from request to request. Lending the source's
// page cache through a mapping instead (removed) cost 2.5x to 3.5x the CPU time at 1 GiB:
// a page fault on every source page and TLB shootdowns at each munmap outweigh the copy
// that read() makes into a buffer that stays faulted in.
Status Engine::prepare_read(Slot& s) {
    const Request& q = s.req;
    if (!s.buf) {
        size_t bytes = (req_size_ + kBufferAlign - 1) / kBufferAlign * kBufferAlign;
        if (bytes % kHugePage == 0) {
            s.buf.reset(static_cast<std::byte*>(std::aligned_alloc(kHugePage, bytes)));
            if (s.buf) (void)::madvise(s.buf.get(), bytes, MADV_HUGEPAGE);
        } else {
            s.buf.reset(static_cast<std::byte*>(std::aligned_alloc(kBufferAlign, bytes)));
        }
        if (!s.buf) return make_error(ENOMEM, "copy: out of memory");
        buffer_bytes_ += bytes;
    }
    std::span<std::byte> buf(s.buf.get(), q.len);
    if (auto st = read_guest(q.off, buf); !st) return read_error(q.off, st.error());
    std::span<const std::byte> data = buf;
    if (cluster_) {
        auto st = prepare_compressed(s, data, false);
        if (!st) return write_error(q.off, st.error().code);
        return {};
    }
    if (cfg_.zero_as_data) {
        s.ops.push_back(Op{Op::Kind::Write, q.off, q.len, data.data()});
        s.data_bytes += q.len;
        return {};
    }
    split_sparse(data, q.off, rule_, q.head_edge, q.tail_edge, s.segs);
    for (const Segment& g : s.segs) {
        if (g.zero) {
            add_zero(s, g.off, g.len);
        } else {
            s.ops.push_back(Op{Op::Kind::Write, g.off, g.len, data.data() + (g.off - q.off)});
            s.data_bytes += g.len;
        }
    }
    return {};
}

Status Engine::prepare(Slot& s) {
    const Request& q = s.req;
    switch (q.action) {
        case Action::Read:
            if (offload_ok_.load(std::memory_order_relaxed)) {
                s.offload = true;
                return {};
            }
            return prepare_read(s);
        case Action::ZeroData:
            if (cluster_) {
                auto st = prepare_compressed(s, {}, true);
                if (!st) return write_error(q.off, st.error().code);
                return {};
            }
            s.ops.push_back(Op{Op::Kind::Write, q.off, q.len, zeroes_.get()});
            s.data_bytes += q.len;
            return {};
        case Action::WriteZeroes:
            add_zero(s, q.off, q.len);
            return {};
        case Action::Skip:
            break;
    }
    s.skip_bytes += q.len;
    return {};
}

void Engine::salvage_read(const PlanSource& src, uint64_t soff, std::span<std::byte> buf) {
    const uint64_t step = std::max<uint64_t>(kSector, src.node->limits().request_alignment);
    for (uint64_t done = 0; done < buf.size();) {
        const uint64_t n = std::min<uint64_t>(step, buf.size() - done);
        auto piece = buf.subspan(done, n);
        if (auto st = src.node->read(soff + done, piece); !st) {
            std::memset(piece.data(), 0, piece.size());
            warn("error while reading offset " + std::to_string(soff + done) + ": " + reason(st.error().code));
        }
        done += n;
    }
}

Status Engine::read_guest(uint64_t off, std::span<std::byte> buf) {
    // A request may cross from one source into the next (clusters with -c, merged runs).
    const auto& srcs = cfg_.sources;
    size_t i = 0;
    for (uint64_t done = 0; done < buf.size();) {
        const uint64_t pos = off + done;
        while (i + 1 < srcs.size() && pos >= srcs[i].start + srcs[i].size) ++i;
        const PlanSource& s = srcs[i];
        const uint64_t n = std::min<uint64_t>(buf.size() - done, s.start + s.size - pos);
        auto part = buf.subspan(done, n);
        auto st = s.node->read(pos - s.start, part);
        if (!st) {
            if (!o_.salvage) return st;
            salvage_read(s, pos - s.start, part);
        }
        done += n;
    }
    return {};
}

Status Engine::offload(Slot& s) {
    const Request& q = s.req;
    const auto& srcs = cfg_.sources;
    size_t i = 0;
    uint64_t copied = 0;
    for (uint64_t done = 0; done < q.len;) {
        const uint64_t pos = q.off + done;
        while (i + 1 < srcs.size() && pos >= srcs[i].start + srcs[i].size) ++i;
        const PlanSource& src = srcs[i];
        loff_t in = static_cast<loff_t>(pos - src.start);
        loff_t out = static_cast<loff_t>(pos);
        const uint64_t n = std::min<uint64_t>(q.len - done, src.start + src.size - pos);
        ssize_t r = ::copy_file_range(src_fds_[i], &in, target_fd_, &out, n, 0);
        if (r < 0 && errno == EINTR) continue;
        if (r <= 0) {
            // Not possible here (other file systems, an old kernel, the source's last
            // partial sector): copy this request and the rest the normal way, as qemu does.
            offload_ok_ = false;
            s.offload = false;
            BLK_TRY(prepare_read(s));
            return {};
        }
        done += static_cast<uint64_t>(r);
        copied += static_cast<uint64_t>(r);
    }
    offloaded_ += copied;
    s.data_bytes += q.len;
    return {};
}

Status Engine::execute(Slot& s) {
    if (check_cancel()) return make_error(ECANCELED, "interrupted");
    auto wait_rate = [&](uint64_t bytes) {
        if (limiter_.acquire(bytes, [&] { return check_cancel(); })) return Status{};
        return Status{make_error(ECANCELED, "interrupted")};
    };
    if (s.offload) {
        BLK_TRY(wait_rate(s.req.len));
        BLK_TRY(offload(s));
        if (s.offload) {
            data_bytes_ += s.data_bytes;
            return {};
        }
        // The offload fell back: s.ops now holds the normal copy (already paid for).
    } else {
        uint64_t bytes = 0;
        for (const Op& op : s.ops) bytes += op.len;
        BLK_TRY(wait_rate(bytes));
    }
    BLK_TRY(execute_ops(s));
    data_bytes_ += s.data_bytes;
    zero_bytes_ += s.zero_bytes;
    skip_bytes_ += s.skip_bytes;
    return {};
}

Status Engine::execute_ops(Slot& s) {
    for (const Op& op : s.ops) {
        Status st;
        switch (op.kind) {
            case Op::Kind::Write:
                st = o_.target->write(op.off, std::span<const std::byte>(op.data, op.len));
                break;
            case Op::Kind::Zero:
                st = o_.target->write_zeroes(op.off, op.len, kZeroMayUnmap);
                break;
            case Op::Kind::Compressed:
                st = o_.target->write_compressed(op.off, op.len, *op.cc);
                break;
        }
        if (!st) return write_error(s.req.off, st.error().code);
    }
    return {};
}

void Engine::submit(Slot* s) {
    std::unique_lock lk(seq_mu_);
    ring_[s->seq % nslots_] = s;
    if (writing_ || s->seq != write_next_) return;  // the writer, or a later submitter, takes it
    writing_ = true;
    while (!stopped()) {
        Slot* w = ring_[write_next_ % nslots_];
        if (!w || w->seq != write_next_) break;
        ring_[write_next_ % nslots_] = nullptr;
        lk.unlock();
        Status st = execute(*w);
        const uint64_t done = w->req.action == Action::Read || w->req.action == Action::ZeroData ? w->req.len : 0;
        if (!st) fail(std::move(st).error());
        else report_progress(done);
        lk.lock();
        ++write_next_;
        free_.push_back(w);
        slot_cv_.notify_one();
    }
    writing_ = false;
}

void Engine::worker() {
    while (!check_cancel()) {
        Slot* s = acquire_slot();
        if (!s) break;
        s->reset();
        bool have = false;
        {
            std::lock_guard lk(plan_mu_);
            if (!stopped()) {
                auto r = planner_->next();
                if (!r) {
                    fail(std::move(r).error());
                } else if (*r) {
                    s->req = **r;
                    s->seq = next_seq_++;
                    have = true;
                }
            }
        }
        if (!have) {
            release_slot(s);
            break;
        }
        if (auto st = prepare(*s); !st) {
            fail(std::move(st).error());
            release_slot(s);
            break;
        }
        if (o_.in_order) {
            submit(s);
            continue;
        }
        const uint64_t done = s->req.action == Action::Read || s->req.action == Action::ZeroData ? s->req.len : 0;
        Status st = execute(*s);
        release_slot(s);
        if (!st) {
            fail(std::move(st).error());
            break;
        }
        report_progress(done);
    }
}

Result<CopyStats> Engine::run() {
    BLK_TRY(setup());
    if (cfg_.zero_as_data) {
        size_t bytes = (req_size_ + kBufferAlign - 1) / kBufferAlign * kBufferAlign;
        // calloc: the zero pages are shared and never written, so they cost no memory.
        zeroes_.reset(static_cast<std::byte*>(std::calloc(bytes, 1)));
        if (!zeroes_) return make_error(ENOMEM, "copy: out of memory");
    }
    if (o_.progress) {
        BLK_TRY_ASSIGN(progress_total_, count_progress_total());
        o_.progress(0, progress_total_);
    }
    cfg_.warn = [this](const std::string& m) { warn(m); };
    planner_.emplace(cfg_);

    std::vector<std::thread> threads;
    for (unsigned i = 1; i < nthreads_; ++i) {
        try {
            threads.emplace_back([this] { worker(); });
        } catch (const std::system_error&) {
            break;  // fewer workers, same result
        }
    }
    worker();
    for (std::thread& t : threads) t.join();

    if (err_) return *err_;
    if (auto st = o_.target->flush(); !st) {
        return make_error(st.error().code, "error while flushing the target: " + reason(st.error().code));
    }
    CopyStats stats;
    stats.total = cfg_.total;
    stats.data_written = data_bytes_;
    stats.zeroed = zero_bytes_;
    stats.skipped = skip_bytes_ + planner_->skipped();
    stats.offloaded = offloaded_;
    stats.buffer_bytes = buffer_bytes_;
    if (o_.progress) {
        std::lock_guard lk(progress_mu_);
        if (progress_done_ != progress_total_ || progress_total_ == 0) o_.progress(progress_total_, progress_total_);
    }
    return stats;
}

}  // namespace

Result<CopyStats> copy_image(const CopyOptions& opts) {
    Engine e(opts);
    return e.run();
}

}  // namespace blk
