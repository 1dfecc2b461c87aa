// Typed image facts: what a format knows about an image beyond its bytes (internal
// snapshots, format-specific details), as plain values. Drivers fill them; the CLI turns
// them into qemu's JSON and text at the edge (tools/cmd_info.cpp), so a new format adds
// its struct to FormatSpecific here and its rendering there, and no JSON crosses the
// library's interface.
#pragma once

#include <cstdint>
#include <optional>
#include <string>
#include <variant>
#include <vector>

namespace blk {

// One internal snapshot (qemu's SnapshotInfo).
struct SnapshotFacts {
    std::string id;
    std::string name;
    uint64_t vm_state_size = 0;
    uint32_t date_sec = 0;
    uint32_t date_nsec = 0;
    uint64_t vm_clock_ns = 0;
    std::optional<uint64_t> icount;  // absent when the image does not record it
};

// One persistent dirty bitmap (qemu's Qcow2BitmapInfo).
struct BitmapFacts {
    std::string name;
    uint64_t granularity = 0;
    bool in_use = false;     // flag "in-use": not stored back consistently
    bool auto_flag = false;  // flag "auto": enabled, tracks writes
};

// One LUKS key slot (qemu's QCryptoBlockInfoLUKSSlot).
struct LuksSlotFacts {
    bool active = false;
    uint64_t key_offset = 0;
    std::optional<uint32_t> iters;    // active slots only
    std::optional<uint32_t> stripes;  // active slots only
};

// How an image's guest data is encrypted (qemu's QCryptoBlockInfo): "aes" (qcow's legacy
// cipher, nothing more known) or "luks" with its header's facts.
struct EncryptFacts {
    std::string format;  // "aes" or "luks"
    // luks only:
    std::string cipher_alg, cipher_mode, ivgen_alg, hash_alg, uuid;
    std::optional<std::string> ivgen_hash_alg;
    uint64_t payload_offset = 0;
    uint32_t master_key_iters = 0;
    std::vector<LuksSlotFacts> slots;
};

// qcow2's format-specific facts (qemu's ImageInfoSpecificQCow2).
struct Qcow2Facts {
    bool v3 = true;                // compat "1.1"; false: "0.10" (only the first three below apply)
    std::string compression_type;  // "zlib" or "zstd"
    uint32_t refcount_bits = 16;
    // compat 1.1 only:
    bool lazy_refcounts = false;
    bool corrupt = false;
    bool extended_l2 = false;
    bool has_data_file = false;      // data-file-raw is shown then
    std::optional<std::string> data_file;  // the name, where the image records one
    bool data_file_raw = false;
    std::vector<BitmapFacts> bitmaps;
    // any version:
    std::optional<EncryptFacts> encrypt;
};

// The host file's facts (qemu 8 shows an empty "file" block for a protocol node).
struct FileFacts {};

// A node's format-specific facts: none (monostate) or one format's.
using FormatFacts = std::variant<std::monostate, Qcow2Facts, FileFacts>;

}  // namespace blk
