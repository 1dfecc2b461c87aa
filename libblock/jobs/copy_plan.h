// The copy engine's planner: block status of the sources, turned into requests in guest order.
#pragma once

#include <cstdint>
#include <functional>
#include <optional>
#include <string>
#include <vector>

#include "blk/node.h"
#include "blk/result.h"

namespace blk::copy_detail {

// What a range of the target needs.
enum class Action : uint8_t {
    Read,         // read from the sources and write what was read (zero detection applies)
    WriteZeroes,  // the source reads as zeroes: write_zeroes on the target
    ZeroData,     // the source reads as zeroes and -S 0 wants them written as data
    Skip,         // nothing to do: the target already reads right (zero init, new backing)
};

struct PlanSource {
    Node* node = nullptr;
    uint64_t start = 0;  // guest offset of its first byte in the target
    uint64_t size = 0;
    const Node* base = nullptr;  // block_status_above stops here (-B: the top layer only)
};

struct PlanConfig {
    std::vector<PlanSource> sources;  // in guest order, sizes > 0
    uint64_t total = 0;               // guest bytes (sum of the sizes)
    bool target_has_backing = false;
    uint64_t target_backing_size = UINT64_MAX;
    bool target_is_zero = false;
    bool zero_as_data = false;  // -S 0
    bool salvage = false;
    // Read and ZeroData requests end at multiples of this (guest offsets), so requests stay
    // aligned to the target whatever the extents' alignment.
    uint64_t request_size = 2u << 20;
    // WriteZeroes requests end at multiples of this.
    uint64_t zero_request_size = 1u << 30;
    // Compression: every request covers whole clusters of this size; a cluster the source
    // does not describe with one action is read (0: no compression).
    uint64_t cluster = 0;
    // Salvage warnings ("error while reading block status at offset N: ..."); may be empty.
    std::function<void(const std::string&)> warn;
};

struct Request {
    uint64_t off = 0;
    uint64_t len = 0;
    Action action = Action::Read;
    // For Read: the request starts (ends) where the source's data does, not at a cut
    // between two requests of the same data.
    bool head_edge = false;
    bool tail_edge = false;
};

// Not thread-safe: the engine calls it under its planning lock. Asks block status in
// ranges as large as the source allows and merges neighbouring runs with the same action
// (across backing layers and across sources), so the number of requests follows the
// data, not the image size. A Read request (without compression) also ends where the
// source's bytes stop being contiguous on one host node, as qemu-img's requests do; the
// sparse rule (split_sparse) sees the same requests, so the target's zero runs match.
class Planner {
public:
    explicit Planner(const PlanConfig& cfg) : cfg_(cfg) {}

    // The next request in guest order; ranges that need nothing are passed over (and
    // counted in skipped()). nullopt at the end.
    Result<std::optional<Request>> next();
    uint64_t skipped() const { return skipped_; }

private:
    struct Run {
        uint64_t start = 0;
        uint64_t end = 0;
        Action action = Action::Read;
        const Node* host = nullptr;  // where the bytes lie, if the source says (kStatusOffsetValid)
        uint64_t host_off = 0;       // of `start`
    };
    // True if `next` (which starts where `prev` ends) lies right behind `prev` on the same
    // host node, or neither says where it lies.
    static bool contiguous(const Run& prev, const Run& next);
    // The run of one block-status answer that contains `pos` (pos < total).
    Result<Run> run_at(uint64_t pos);
    Result<Run> query(uint64_t pos);
    // The action for cluster [pos, end): one action if the runs in it agree, else Read.
    Result<Action> cluster_action(uint64_t pos, uint64_t end);
    Result<std::optional<Request>> next_plain();
    Result<std::optional<Request>> next_compressed();
    // Extends [.., end) over whole clusters whose action is `a`, up to `limit`.
    Result<uint64_t> extend_clusters(uint64_t end, Action a, uint64_t limit);
    Action classify(unsigned flags, uint64_t pos) const;

    const PlanConfig& cfg_;
    uint64_t pos_ = 0;
    size_t src_ = 0;  // index of the source holding the last query
    Run run_{0, 0, Action::Read};
    bool have_run_ = false;
    std::optional<Action> prev_;  // action of the range just before pos_
    uint64_t skipped_ = 0;
};

}  // namespace blk::copy_detail
